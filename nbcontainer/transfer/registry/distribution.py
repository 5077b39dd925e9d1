"""Blobs and manifests over the wire (OCI distribution spec), and the v2metadata cache.

Mechanism only; :mod:`.registry` decides what to fetch, push and store. Each function speaks to
one :class:`~.auth.RegistrySession` about one repository of a :class:`~nbcontainer.oci.Reference`:

* :func:`get_manifest` — ``GET /v2/<name>/manifests/<ref>`` (OCI and Docker types, ≤ 4 MiB, digest
  checked), and :func:`select_manifest`, the entry of an index for a platform (:func:`parse_platform`);
* :func:`get_blob` (small blobs in memory), :func:`download_blob` (a layer into a partial file,
  resumed with ``Range: bytes=N-`` after a broken transfer, verified before it returns) and
  :func:`fetch_layer` (download, then decompress into the content store under its diff_id);
* :func:`blob_exists` (``HEAD``), :func:`mount_blob` (cross-repository mount) and :func:`upload_blob`
  (monolithic ``PUT``, or ``PATCH`` chunks then ``PUT``).

:class:`DistributionMetadata` is Docker's v2metadata: ``root/distribution/v2metadata/<diff_id hex>.json``
remembers which compressed blobs a diff_id was pulled as or pushed as, and where.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import platform as _platform
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from nbcontainer.compression import open_decompressed
from nbcontainer.errors import DigestMismatchError, InvalidArgumentError, NotFoundError, RegistryError
from nbcontainer.oci import (
    INDEX_TYPES,
    MANIFEST_TYPES,
    MT_DOCKER_MANIFEST,
    MT_DOCKER_MANIFEST_LIST,
    MT_OCI_INDEX,
    MT_OCI_MANIFEST,
    Descriptor,
    Digest,
    Index,
    Platform,
    Reference,
    layer_compression,
)
from nbcontainer.store.content import ContentStore
from nbcontainer.store.refs import atomic_write
from nbcontainer.transfer.progress import Progress, ProgressEvent
from nbcontainer.transfer.registry.auth import RegistrySession, error_text

__all__ = [
    "ACCEPT",
    "DistributionMetadata",
    "HashingFile",
    "RemoteNotFoundError",
    "blob_exists",
    "decompressed",
    "download_blob",
    "fetch_layer",
    "file_chunks",
    "get_blob",
    "get_manifest",
    "host_platform",
    "mount_blob",
    "parse_platform",
    "select_manifest",
    "upload_blob",
]

ACCEPT = f"{MT_OCI_MANIFEST}, {MT_DOCKER_MANIFEST}, {MT_OCI_INDEX}, {MT_DOCKER_MANIFEST_LIST}"
MAX_MANIFEST = 4 << 20
CHUNK = 1 << 20

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm",
         "armv6l": "arm", "i386": "386", "i686": "386", "ppc64le": "ppc64le", "s390x": "s390x",
         "riscv64": "riscv64"}
_VARIANT = {"armv7l": "v7", "armv6l": "v6"}


class RemoteNotFoundError(RegistryError, NotFoundError):
    """A repository, tag, manifest or blob the registry does not have (404)."""


# -- v2metadata ---------------------------------------------------------------------------------


class DistributionMetadata:
    """``root/distribution/v2metadata/<diff_id hex>.json``.

    Each holds ``[{digest, mediaType, size, registry, repository}]``, newest first.
    """

    KEEP = 20

    def __init__(self, root: str | os.PathLike) -> None:
        self.dir = Path(root) / "distribution" / "v2metadata"
        self._lock = threading.Lock()

    def get(self, diff_id: str) -> list[dict[str, Any]]:
        try:
            data = json.loads((self.dir / Digest(diff_id).hex).with_suffix(".json").read_bytes())
        except (FileNotFoundError, ValueError):
            return []
        return data if isinstance(data, list) else []

    def add(self, diff_id: str, *, digest: str, media_type: str, size: int, registry: str,
            repository: str) -> None:
        entry = {"digest": str(digest), "mediaType": media_type, "size": size,
                 "registry": registry, "repository": repository}
        with self._lock:
            self.dir.mkdir(parents=True, exist_ok=True)
            old = [e for e in self.get(diff_id)
                   if (e.get("digest"), e.get("registry"), e.get("repository"))
                   != (entry["digest"], registry, repository)]
            data = [entry, *old][: self.KEEP]
            atomic_write((self.dir / Digest(diff_id).hex).with_suffix(".json"), json.dumps(data).encode())


# -- manifests and small blobs ------------------------------------------------------------------


def get_manifest(sess: RegistrySession, ref: Reference, reference: str,
                 scope: str) -> tuple[Digest, bytes, str]:
    """The manifest or index ``reference`` (tag or digest) of ``ref``'s repository: digest, bytes, type."""
    path = f"/v2/{ref.repository}/manifests/{reference}"
    response = sess.request("GET", path, scopes=(scope,), headers={"Accept": ACCEPT}, stream=True)
    try:
        if response.status_code == 404:
            response.read()
            shown = ref.familiar_name + (f"@{reference}" if reference.startswith("sha256:")
                                         else f":{reference}")
            url = str(response.request.url)
            raise RemoteNotFoundError(f"manifest for {shown} not found: {error_text(response).lower()} "
                                      f"({url})", status=404, url=url)
        if response.status_code != 200:
            raise sess.error(response, f"cannot fetch manifest {reference} of {ref.name}")
        raw = b""
        for chunk in response.iter_bytes():
            raw += chunk
            if len(raw) > MAX_MANIFEST:
                raise RegistryError(f"manifest {reference} of {ref.name} is larger than 4 MiB",
                                    url=str(response.request.url))
    except httpx.TransportError as err:
        raise sess.unreachable(err, str(response.request.url)) from err
    finally:
        response.close()
    digest = Digest.of(raw)
    if reference.startswith("sha256:") and digest != reference:
        raise DigestMismatchError(f"manifest {ref.name}@{reference}", reference, digest)
    try:
        media_type = json.loads(raw).get("mediaType") or ""
    except (ValueError, AttributeError) as err:
        raise RegistryError(f"manifest {reference} of {ref.name} is not JSON") from err
    if not media_type:
        media_type = response.headers.get("content-type", "").split(";")[0].strip()
    if media_type not in MANIFEST_TYPES and media_type not in INDEX_TYPES:
        raise RegistryError(f"unsupported manifest type {media_type!r} for {ref.familiar}")
    return digest, raw, media_type


def get_blob(sess: RegistrySession, ref: Reference, desc: Descriptor, scope: str, what: str) -> bytes:
    """A small blob (a config) in memory, checked against ``desc``'s digest and size."""
    response = sess.request("GET", f"/v2/{ref.repository}/blobs/{desc.digest}", scopes=(scope,))
    if response.status_code == 404:
        raise RemoteNotFoundError(f"{what} {desc.digest} of {ref.name} not found",
                                  status=404, url=str(response.request.url))
    if response.status_code != 200:
        raise sess.error(response, f"cannot fetch {what} {desc.digest} of {ref.name}")
    data = response.content
    actual = Digest.of(data)
    if actual != desc.digest or len(data) != desc.size:
        raise DigestMismatchError(f"{what} {desc.digest} from {response.request.url}", desc.digest, actual)
    return data


def host_platform() -> Platform:
    machine = _platform.machine()
    return Platform(_ARCH.get(machine, machine), "linux", _VARIANT.get(machine, ""))


def parse_platform(text: str | None) -> Platform:
    """``linux/arm64/v8``, ``linux/amd64`` or ``arm64`` (os defaults to linux); None → the host's."""
    if not text:
        return host_platform()
    parts = text.strip().split("/")
    if len(parts) == 1:
        return Platform(parts[0], "linux")
    if len(parts) in (2, 3) and all(parts):
        return Platform(parts[1], parts[0], parts[2] if len(parts) == 3 else "")
    raise InvalidArgumentError(f"invalid platform {text!r} (expected os/arch[/variant])")


def _platform_matches(have: Platform | None, want: Platform) -> int:
    """0: no match; 1: os/arch match; 2: variant matches too."""
    if have is None or have.os != want.os or have.architecture != want.architecture:
        return 0
    norm = {"arm64": "v8"}.get(want.architecture, "")
    if (have.variant or norm) == (want.variant or norm):
        return 2
    return 1 if not want.variant else 0


def select_manifest(sess: RegistrySession, ref: Reference, index: Index, want: Platform,
                    scope: str) -> tuple[Descriptor, bytes, str]:
    """The image manifest of ``index`` for ``want`` (an exact variant beats a bare os/arch match)."""
    scored = [(_platform_matches(m.platform, want), i, m) for i, m in enumerate(index.manifests)
              if m.media_type not in INDEX_TYPES]
    best = max((s for s in scored if s[0]), default=None, key=lambda s: (s[0], -s[1]))
    if best is None:
        raise RemoteNotFoundError(
            f"no matching manifest for {want} in the manifest list entries of {ref.familiar}", status=404)
    desc = best[2]
    _, raw, media_type = get_manifest(sess, ref, desc.digest, scope)
    if media_type not in MANIFEST_TYPES:
        raise RegistryError(f"index entry {desc.digest} of {ref.familiar} is not an image manifest")
    return desc, raw, media_type


# -- layer downloads ----------------------------------------------------------------------------


def download_blob(sess: RegistrySession, ref: Reference, scope: str, desc: Descriptor, f: BinaryIO, *,
                  emit: Progress, retries: int) -> int:
    """Fill ``f`` (a partial file, maybe non-empty) with the blob; returns the resume offset.

    A broken transfer is resumed with ``Range`` up to ``retries`` times; after that the error says
    to pull again, and the bytes already in ``f`` are kept for that next pull.
    """
    sid = desc.digest.short
    h = hashlib.sha256()
    f.seek(0)
    have = 0
    while chunk := f.read(CHUNK):
        h.update(chunk)
        have += len(chunk)
    if have > desc.size:
        f.seek(0)
        f.truncate()
        h, have = hashlib.sha256(), 0
    resumed_from = 0
    url = sess.url(f"/v2/{ref.repository}/blobs/{desc.digest}")
    attempt = 0
    while have < desc.size:
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            response = sess.request("GET", url, scopes=(scope,), headers=headers, stream=True)
            try:
                if response.status_code == 404:
                    raise RemoteNotFoundError(f"layer {desc.digest} of {ref.name} not found",
                                              status=404, url=url)
                if response.status_code == 200 and have:
                    f.seek(0)  # the registry ignored Range: start over
                    f.truncate()
                    h, have, resumed_from = hashlib.sha256(), 0, 0
                elif response.status_code == 206:
                    start = response.headers.get("content-range", "").removeprefix("bytes ").split("-")[0]
                    if start.strip() != str(have):
                        raise RegistryError(f"registry answered range {start!r} for {have} of {url}", url=url)
                    resumed_from = have
                elif response.status_code != 200:
                    raise sess.error(response, f"cannot fetch layer {desc.digest} of {ref.name}")
                f.seek(have)
                for chunk in response.iter_raw():  # unbuffered: a break keeps every byte
                    f.write(chunk)
                    h.update(chunk)
                    have += len(chunk)
                    emit(ProgressEvent(sid, "Downloading", have, desc.size))
                    if have > desc.size:
                        break
            finally:
                response.close()
            if have < desc.size:
                raise httpx.RemoteProtocolError("the registry closed the body early")
        except httpx.TransportError as err:
            f.flush()
            attempt += 1
            if attempt > retries:
                raise RegistryError(
                    f"download of {desc.digest} from {sess.host} broke after {have} of {desc.size} "
                    f"bytes ({err}); pull again to resume", status=0, url=url,
                ) from err
            emit(ProgressEvent(sid, f"Retrying ({attempt}/{retries})"))
            time.sleep(min(0.2 * attempt, 2.0))
        except RegistryError as err:
            if err.status == 0 and attempt < retries:  # connection refused mid-pull
                attempt += 1
                time.sleep(min(0.2 * attempt, 2.0))
                continue
            raise
    f.flush()
    emit(ProgressEvent(sid, "Verifying Checksum"))
    actual = Digest("sha256:" + h.hexdigest())
    if have != desc.size or actual != desc.digest:
        raise DigestMismatchError(f"layer blob from {url}", desc.digest,
                                  actual if have == desc.size else f"size {have}")
    emit(ProgressEvent(sid, "Download complete"))
    return resumed_from


def decompressed(src: BinaryIO, compression: str) -> Iterator[bytes]:
    """Uncompressed chunks of a layer file (gzip may have several members; zstd several frames)."""
    if compression not in ("", "gzip", "zstd"):
        raise InvalidArgumentError(f"unsupported layer compression {compression!r}")
    with open_decompressed(src, compression, corrupt=_corrupt_layer) as reader:
        while chunk := reader.read(CHUNK):
            yield chunk


def _corrupt_layer(compression: str, err: Exception) -> InvalidArgumentError:
    return InvalidArgumentError(f"layer blob is truncated or corrupt ({compression}: {err})")


def fetch_layer(sess: RegistrySession, ref: Reference, scope: str, content: ContentStore, desc: Descriptor,
                diff_id: Digest, *, emit: Progress, retries: int) -> int | None:
    """Download layer ``desc`` into ``ingest/pull-<hex>`` and store it uncompressed as ``diff_id``.

    Returns the offset the download resumed from, or None when the layer was already in the store
    (another pull of the same blob got there first: it holds the partial file's lock meanwhile).
    """
    sid = desc.digest.short
    compression = layer_compression(desc.media_type)
    partial = content.ingest_dir / f"pull-{desc.digest.hex}"
    with open(partial, "ab+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        if content.has(diff_id):
            emit(ProgressEvent(sid, "Already exists"))
            unlink(partial)
            return None
        try:
            resumed = download_blob(sess, ref, scope, desc, f, emit=emit, retries=retries)
        except DigestMismatchError:
            unlink(partial)
            raise
        emit(ProgressEvent(sid, "Extracting", 0, desc.size))
        f.seek(0)
        if compression == "" and desc.digest == diff_id:
            content.adopt(partial, diff_id)
        else:
            with content.writer() as w:
                done = 0
                for chunk in decompressed(f, compression):
                    w.write(chunk)
                    if f.tell() - done >= (8 << 20):
                        done = f.tell()
                        emit(ProgressEvent(sid, "Extracting", done, desc.size))
                w.commit(diff_id, what=f"layer {desc.digest} (diff_id)")
            unlink(partial)
    emit(ProgressEvent(sid, "Extracting", desc.size, desc.size))
    return resumed


# -- uploads ------------------------------------------------------------------------------------


class HashingFile:
    """A write-only file that hashes and counts what goes through it (gzip writes into it)."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.f.write(data)
        self.hash.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self.f.flush()


def file_chunks(path: str | os.PathLike, start: int = 0, length: int | None = None) -> Iterator[bytes]:
    with open(path, "rb") as f:
        f.seek(start)
        left = length
        while left is None or left > 0:
            chunk = f.read(CHUNK if left is None else min(CHUNK, left))
            if not chunk:
                break
            if left is not None:
                left -= len(chunk)
            yield chunk


def blob_exists(sess: RegistrySession, ref: Reference, scope: str, digest: str) -> bool:
    response = sess.request("HEAD", f"/v2/{ref.repository}/blobs/{digest}", scopes=(scope,))
    if response.status_code == 200:
        return True
    if response.status_code == 404:
        return False
    raise sess.error(response, f"cannot check blob {digest} in {ref.name}")


def mount_blob(sess: RegistrySession, ref: Reference, scope: str, digest: str, source: str) -> bool:
    """Ask the registry to mount ``digest`` from repository ``source``; False when it would not."""
    response = sess.request(
        "POST", f"/v2/{ref.repository}/blobs/uploads/", params={"mount": digest, "from": source},
        scopes=(scope, f"repository:{source}:pull"),
    )
    if response.status_code == 201:
        return True
    if response.status_code == 202 and response.headers.get("location"):
        # The registry could not mount and opened an upload instead: close it.
        with contextlib.suppress(RegistryError):
            sess.request("DELETE", response.headers["location"], scopes=(scope,))
    return False


def upload_blob(sess: RegistrySession, ref: Reference, scopes: tuple[str, ...], digest: str, size: int,
                body: Callable[[], Iterator[bytes]], *, chunk_size: int, emit: Progress, sid: str = "",
                path: str | os.PathLike | None = None) -> None:
    """Upload one blob: monolithic ``PUT``, or ``PATCH`` chunks of ``path`` when above ``chunk_size``."""
    response = sess.request("POST", f"/v2/{ref.repository}/blobs/uploads/", scopes=scopes)
    if response.status_code != 202 or not response.headers.get("location"):
        raise sess.error(response, f"cannot start a blob upload to {ref.name}")
    location = str(response.url.join(response.headers["location"]))
    octet = {"Content-Type": "application/octet-stream"}
    if path is None or size <= chunk_size:
        response = sess.request("PUT", _with_digest(location, digest), scopes=scopes,
                                headers={**octet, "Content-Length": str(size)}, body=body)
    else:
        offset = 0
        while offset < size:
            n = min(chunk_size, size - offset)
            start = offset
            response = sess.request(
                "PATCH", location, scopes=scopes,
                headers={**octet, "Content-Length": str(n), "Content-Range": f"{start}-{start + n - 1}"},
                body=functools.partial(file_chunks, path, start, n),
            )
            if response.status_code != 202:
                raise sess.error(response, f"chunk upload of {digest} to {ref.name} failed")
            location = str(response.url.join(response.headers.get("location", location)))
            offset += n
            emit(ProgressEvent(sid, "Pushing", offset, size))
        response = sess.request("PUT", _with_digest(location, digest), scopes=scopes,
                                headers={"Content-Length": "0"}, body=b"")
    if response.status_code not in (201, 204):
        raise sess.error(response, f"upload of {digest} to {ref.name} failed")
    if sid:
        emit(ProgressEvent(sid, "Pushing", size, size))


def _with_digest(location: str, digest: str) -> str:
    # The upload URL carries the registry's own state in its query: keep it, add the digest.
    return str(httpx.URL(location).copy_merge_params({"digest": str(digest)}))


def unlink(path: str | os.PathLike) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
