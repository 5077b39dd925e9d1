"""Pull and push images with any OCI distribution registry.

Locally, layers are kept uncompressed (``application/vnd.oci.image.layer.v1.tar``, blob digest ==
diff_id). So a pull downloads each compressed layer into ``ingest/pull-<hex>`` while hashing it,
verifies size and digest, decompresses it into the content store verifying the diff_id from the
config, and stores a *local* OCI manifest over the uncompressed layers; the config blob is kept
byte for byte, so the image id equals the registry's. The digest of the remote manifest (or index)
is recorded on the local manifest as the annotation ``io.nbcontainer.repo-digests``
(``name@sha256:…``, comma separated; :func:`repo_digests` reads it), Docker's ``RepoDigests``.

``root/distribution/v2metadata/<diff_id hex>.json`` remembers, per diff_id, which compressed blob
it came from or was pushed as, and where (Docker's v2metadata): a push then finds the blob with a
HEAD or mounts it from another repository of the same registry instead of compressing it again.

A broken transfer is resumed with ``Range: bytes=N-`` (a few times in the same pull, then by the
next pull, which finds the partial file). Nothing is named until every blob is verified.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import os
import platform as _platform
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, Self

import httpx

from ..errors import DigestMismatchError, InvalidArgumentError, NotFoundError, RegistryError
from ..oci import (
    INDEX_TYPES,
    MANIFEST_TYPES,
    MT_DOCKER_MANIFEST,
    MT_DOCKER_MANIFEST_LIST,
    MT_OCI_CONFIG,
    MT_OCI_INDEX,
    MT_OCI_LAYER,
    MT_OCI_LAYER_GZIP,
    MT_OCI_MANIFEST,
    Descriptor,
    Digest,
    ImageConfig,
    Index,
    Manifest,
    Platform,
    Reference,
    layer_compression,
)
from . import Image, ImageStore
from .auth import CredentialStore, RegistrySession, _error_text, registry_host
from .refs import atomic_write

__all__ = [
    "ANNOTATION_REPO_DIGESTS",
    "LayerResult",
    "LineProgress",
    "ProgressEvent",
    "PullResult",
    "RegistryClient",
    "RemoteManifest",
    "RemoteNotFoundError",
    "TqdmProgress",
    "host_platform",
    "parse_platform",
    "repo_digests",
]

ANNOTATION_REPO_DIGESTS = "io.nbcontainer.repo-digests"
ACCEPT = f"{MT_OCI_MANIFEST}, {MT_DOCKER_MANIFEST}, {MT_OCI_INDEX}, {MT_DOCKER_MANIFEST_LIST}"
MAX_MANIFEST = 4 << 20
CHUNK = 1 << 20
PARALLEL = 3

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm",
         "armv6l": "arm", "i386": "386", "i686": "386", "ppc64le": "ppc64le", "s390x": "s390x",
         "riscv64": "riscv64"}
_VARIANT = {"armv7l": "v7", "armv6l": "v6"}


class RemoteNotFoundError(RegistryError, NotFoundError):
    """A repository, tag, manifest or blob the registry does not have (404)."""


# -- platforms and repo digests ---------------------------------------------------------------


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


def repo_digests(manifest: Manifest) -> list[str]:
    """The ``name@sha256:…`` digests a local manifest was pulled as or pushed to."""
    raw = manifest.annotations.get(ANNOTATION_REPO_DIGESTS, "")
    return [x for x in raw.split(",") if x]


# -- progress -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProgressEvent:
    """One line of Docker's pull/push output: ``id`` is a short digest, or "" for global lines."""

    id: str
    status: str
    current: int = 0
    total: int = 0

    def line(self) -> str:
        text = f"{self.id}: {self.status}" if self.id else self.status
        if self.total and self.status in ("Downloading", "Extracting", "Pushing"):
            text += f" {_human(self.current)}/{_human(self.total)}"
        return text


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.3g}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1000
    return f"{n}"


class LineProgress:
    """Docker's plain output: one line per status change of a layer, plus the global lines."""

    _QUIET = ("Downloading", "Extracting", "Pushing")

    def __init__(self, file: IO[str] | None = None) -> None:
        self.file = file
        self._last: dict[str, str] = {}
        self._lock = threading.Lock()

    def __call__(self, event: ProgressEvent) -> None:
        with self._lock:
            if event.id and self._last.get(event.id) == event.status and event.status in self._QUIET:
                return
            self._last[event.id] = event.status
            out = self.file or sys.stdout
            print(event.line() if event.status not in self._QUIET else f"{event.id}: {event.status}",
                  file=out, flush=True)


class TqdmProgress:
    """One tqdm bar per layer (``tqdm.auto``: a widget in Jupyter, text elsewhere)."""

    _BAR = ("Downloading", "Extracting", "Pushing")
    _DONE = ("Pull complete", "Already exists", "Pushed", "Layer already exists")

    def __init__(self, file: IO[str] | None = None, *, leave: bool = True) -> None:
        from tqdm.auto import tqdm

        self._tqdm = tqdm
        self.file = file
        self.leave = leave
        self._bars: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __call__(self, event: ProgressEvent) -> None:
        with self._lock:
            if not event.id or event.status.startswith("Pulling from"):
                self._tqdm.write(event.line(), file=self.file)
                return
            bar = self._bars.get(event.id)
            if bar is None:
                bar = self._tqdm(total=event.total or None, desc=f"{event.id}: {event.status}",
                                 unit="B", unit_scale=True, leave=self.leave, file=self.file)
                self._bars[event.id] = bar
            label = f"{event.id}: {event.status}"
            if bar.desc != label:
                bar.set_description_str(label, refresh=False)
            if event.status in self._BAR and event.total:
                if bar.total != event.total:
                    bar.reset(total=event.total)
                bar.update(event.current - bar.n)
            elif event.status in self._DONE or event.status.startswith("Mounted from"):
                if bar.total:
                    bar.update(bar.total - bar.n)
                bar.close()
            else:
                bar.refresh()


Progress = Callable[[ProgressEvent], None]


def _progress_sink(progress: Any) -> Progress:
    if progress is None:
        return lambda event: None
    if hasattr(progress, "write") and not callable(progress):
        return LineProgress(progress)
    if callable(progress):
        return progress
    raise InvalidArgumentError("progress must be None, a callable or a text stream")


# -- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerResult:
    """One layer of a pull: its diff_id (local blob), the remote blob, and what happened."""

    diff_id: Digest
    digest: Digest
    media_type: str
    size: int
    status: str  # "Pull complete" or "Already exists"
    resumed_from: int = 0


@dataclass(frozen=True)
class PullResult:
    image: Image
    digest: Digest  # the remote manifest (or index) digest, as Docker prints it
    status: str  # "Downloaded newer image for NAME" or "Image is up to date for NAME"
    layers: list[LayerResult] = field(default_factory=list)
    platform: Platform | None = None


@dataclass(frozen=True)
class RemoteManifest:
    """What ``manifest inspect`` shows: the remote manifest or index, its digest and raw bytes."""

    reference: str
    digest: Digest
    media_type: str
    manifest: Manifest | Index
    raw: bytes

    @property
    def is_index(self) -> bool:
        return isinstance(self.manifest, Index)

    def to_json(self) -> dict[str, Any]:
        return json.loads(self.raw)


# -- distribution metadata (diff_id -> compressed blobs seen) -----------------------------------


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


# -- streams ------------------------------------------------------------------------------------


def _decompressed(src: BinaryIO, compression: str) -> Iterator[bytes]:
    """Uncompressed chunks of a layer file (gzip may have several members; zstd several frames)."""
    if compression == "":
        while chunk := src.read(CHUNK):
            yield chunk
    elif compression == "gzip":
        d = zlib.decompressobj(wbits=31)
        while chunk := src.read(CHUNK):
            while chunk:
                out = d.decompress(chunk)
                if out:
                    yield out
                if d.eof:
                    chunk = d.unused_data
                    d = zlib.decompressobj(wbits=31)
                else:
                    chunk = b""
        tail = d.flush()
        if tail:
            yield tail
    elif compression == "zstd":
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(src, read_across_frames=True)
        while chunk := reader.read(CHUNK):
            yield chunk
    else:
        raise InvalidArgumentError(f"unsupported layer compression {compression!r}")


class _HashingFile:
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


def _file_chunks(path: str | os.PathLike, start: int = 0, length: int | None = None,
                 on_chunk: Callable[[int], None] | None = None) -> Iterator[bytes]:
    with open(path, "rb") as f:
        f.seek(start)
        left = length
        while left is None or left > 0:
            chunk = f.read(CHUNK if left is None else min(CHUNK, left))
            if not chunk:
                break
            if left is not None:
                left -= len(chunk)
            if on_chunk:
                on_chunk(len(chunk))
            yield chunk


# -- the client ---------------------------------------------------------------------------------


class RegistryClient:
    """Pull, push, login/logout and remote manifest inspection for any OCI registry.

    Parameters
    ----------
    config_path
        Docker ``config.json`` with ``login`` credentials (default ``$DOCKER_CONFIG`` or ``~/.docker``).
    insecure_registries
        Registries (``host:port``) spoken to without TLS verification, falling back to plain HTTP.
        Loopback registries always use plain HTTP, as Docker does.
    timeout
        Seconds per network operation.
    progress
        None (quiet), a callable taking :class:`ProgressEvent`, or a text stream for Docker's lines;
        :class:`TqdmProgress` draws one bar per layer.
    retries
        How often a broken blob download is resumed with ``Range`` within one pull.
    """

    def __init__(
        self,
        *,
        config_path: str | os.PathLike | None = None,
        insecure_registries: tuple[str, ...] | list[str] = (),
        timeout: float = 30.0,
        progress: Any = None,
        retries: int = 3,
        max_concurrent: int = PARALLEL,
    ) -> None:
        self.credentials = CredentialStore(config_path)
        self.insecure = {registry_host(r) for r in insecure_registries}
        self.timeout = timeout
        self.emit = _progress_sink(progress)
        self.retries = retries
        self.max_concurrent = max_concurrent
        self._sessions: dict[str, RegistrySession] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        for s in self._sessions.values():
            s.close()
        self._sessions.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _session(self, registry: str) -> RegistrySession:
        host = registry_host(registry)
        with self._lock:
            sess = self._sessions.get(host)
            if sess is None:
                sess = RegistrySession(registry, credentials=self.credentials.get(registry),
                                       insecure=host in self.insecure, timeout=self.timeout)
                self._sessions[host] = sess
            return sess

    # -- login ------------------------------------------------------------------------------

    def login(self, registry: str, username: str, password: str) -> None:
        """Check the credentials with ``GET /v2/`` (answering the registry's challenge) and store them."""
        host = registry_host(registry)
        sess = RegistrySession(registry, credentials=(username, password),
                               insecure=host in self.insecure, timeout=self.timeout)
        try:
            response = sess.request("GET", "/v2/")
            if response.status_code != 200:
                raise sess.error(response, f"login to {host} failed")
        except RegistryError as err:
            if err.status in (401, 403):
                raise RegistryError(
                    f"login to {host} failed: {err.status} unauthorized: incorrect username or password",
                    status=err.status, url=err.url,
                ) from err
            raise
        finally:
            sess.close()
        self.credentials.set(registry, username, password)
        with self._lock:
            old = self._sessions.pop(host, None)
        if old:
            old.close()

    def logout(self, registry: str) -> None:
        """Forget the stored credentials of ``registry``; NotFoundError when there were none."""
        host = registry_host(registry)
        with self._lock:
            old = self._sessions.pop(host, None)
        if old:
            old.close()
        if not self.credentials.remove(registry):
            raise NotFoundError(f"not logged in to {registry}")

    # -- manifests --------------------------------------------------------------------------

    def _get_manifest(self, sess: RegistrySession, ref: Reference, reference: str,
                      scope: str) -> tuple[Digest, bytes, str]:
        path = f"/v2/{ref.repository}/manifests/{reference}"
        response = sess.request("GET", path, scopes=(scope,), headers={"Accept": ACCEPT}, stream=True)
        try:
            if response.status_code == 404:
                response.read()
                shown = ref.familiar_name + (f"@{reference}" if reference.startswith("sha256:")
                                             else f":{reference}")
                raise RemoteNotFoundError(
                    f"manifest for {shown} not found: {_error_text(response).lower()}",
                    status=404, url=str(response.request.url),
                )
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

    def _select(self, sess: RegistrySession, ref: Reference, index: Index, want: Platform,
                scope: str) -> tuple[Descriptor, bytes, str]:
        scored = [(_platform_matches(m.platform, want), i, m) for i, m in enumerate(index.manifests)
                  if m.media_type not in INDEX_TYPES]
        best = max((s for s in scored if s[0]), default=None, key=lambda s: (s[0], -s[1]))
        if best is None:
            raise RemoteNotFoundError(
                f"no matching manifest for {want} in the manifest list entries of {ref.familiar}", status=404)
        desc = best[2]
        _, raw, media_type = self._get_manifest(sess, ref, desc.digest, scope)
        if media_type not in MANIFEST_TYPES:
            raise RegistryError(f"index entry {desc.digest} of {ref.familiar} is not an image manifest")
        return desc, raw, media_type

    def manifest_inspect(self, ref: str, *, platform: str | None = None) -> RemoteManifest:
        """The remote manifest or index of ``ref`` without pulling; ``platform`` picks from an index."""
        r = Reference.parse(ref)
        sess = self._session(r.registry)
        scope = f"repository:{r.repository}:pull"
        digest, raw, media_type = self._get_manifest(sess, r, r.digest or r.tag, scope)
        if media_type in INDEX_TYPES:
            index = Index.from_bytes(raw)
            if platform is None:
                return RemoteManifest(str(r), digest, media_type, index, raw)
            desc, raw, media_type = self._select(sess, r, index, parse_platform(platform), scope)
            digest = desc.digest
        return RemoteManifest(str(r), digest, media_type, Manifest.from_bytes(raw), raw)

    # -- blobs ------------------------------------------------------------------------------

    def _get_small_blob(self, sess: RegistrySession, ref: Reference, desc: Descriptor, scope: str,
                        what: str) -> bytes:
        path = f"/v2/{ref.repository}/blobs/{desc.digest}"
        response = sess.request("GET", path, scopes=(scope,))
        if response.status_code == 404:
            raise RemoteNotFoundError(f"{what} {desc.digest} of {ref.name} not found",
                                      status=404, url=str(response.request.url))
        if response.status_code != 200:
            raise sess.error(response, f"cannot fetch {what} {desc.digest} of {ref.name}")
        data = response.content
        actual = Digest.of(data)
        if actual != desc.digest or len(data) != desc.size:
            raise DigestMismatchError(f"{what} {desc.digest} from {response.request.url}", desc.digest,
                                      actual)
        return data

    def _download(self, sess: RegistrySession, ref: Reference, scope: str, desc: Descriptor,
                  f: BinaryIO, sid: str) -> int:
        """Fill ``f`` (a partial file, maybe non-empty) with the blob; returns the resume offset."""
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
                            raise RegistryError(f"registry answered range {start!r} for {have} of {url}",
                                                url=url)
                        resumed_from = have
                    elif response.status_code != 200:
                        raise sess.error(response, f"cannot fetch layer {desc.digest} of {ref.name}")
                    f.seek(have)
                    for chunk in response.iter_raw():  # unbuffered: a break keeps every byte
                        f.write(chunk)
                        h.update(chunk)
                        have += len(chunk)
                        self.emit(ProgressEvent(sid, "Downloading", have, desc.size))
                        if have > desc.size:
                            break
                finally:
                    response.close()
                if have < desc.size:
                    raise httpx.RemoteProtocolError("the registry closed the body early")
            except httpx.TransportError as err:
                f.flush()
                attempt += 1
                if attempt > self.retries:
                    raise RegistryError(
                        f"download of {desc.digest} from {sess.host} broke after {have} of {desc.size} "
                        f"bytes ({err}); pull again to resume", status=0, url=url,
                    ) from err
                self.emit(ProgressEvent(sid, f"Retrying ({attempt}/{self.retries})"))
                time.sleep(min(0.2 * attempt, 2.0))
            except RegistryError as err:
                if err.status == 0 and attempt < self.retries:  # connection refused mid-pull
                    attempt += 1
                    time.sleep(min(0.2 * attempt, 2.0))
                    continue
                raise
        f.flush()
        self.emit(ProgressEvent(sid, "Verifying Checksum"))
        actual = Digest("sha256:" + h.hexdigest())
        if have != desc.size or actual != desc.digest:
            raise DigestMismatchError(f"layer blob from {url}", desc.digest,
                                      actual if have == desc.size else f"size {have}")
        self.emit(ProgressEvent(sid, "Download complete"))
        return resumed_from

    def _pull_layer(self, sess: RegistrySession, ref: Reference, scope: str, store: ImageStore,
                    desc: Descriptor, diff_id: Digest) -> LayerResult:
        sid = desc.digest.short
        content = store.content
        compression = layer_compression(desc.media_type)
        partial = content.ingest_dir / f"pull-{desc.digest.hex}"
        with open(partial, "ab+") as f:
            # Two pulls of one blob: the second waits here, then finds the blob in the store.
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            if content.has(diff_id):
                self.emit(ProgressEvent(sid, "Already exists"))
                _unlink(partial)
                return LayerResult(diff_id, desc.digest, desc.media_type, desc.size, "Already exists")
            try:
                resumed = self._download(sess, ref, scope, desc, f, sid)
            except DigestMismatchError:
                _unlink(partial)
                raise
            self.emit(ProgressEvent(sid, "Extracting", 0, desc.size))
            f.seek(0)
            if compression == "" and desc.digest == diff_id:
                content.adopt(partial, diff_id)
            else:
                with content.writer() as w:
                    done = 0
                    for chunk in _decompressed(f, compression):
                        w.write(chunk)
                        if f.tell() - done >= (8 << 20):
                            done = f.tell()
                            self.emit(ProgressEvent(sid, "Extracting", done, desc.size))
                    w.commit(diff_id, what=f"layer {desc.digest} (diff_id)")
                _unlink(partial)
        self.emit(ProgressEvent(sid, "Extracting", desc.size, desc.size))
        self.emit(ProgressEvent(sid, "Pull complete"))
        return LayerResult(diff_id, desc.digest, desc.media_type, desc.size, "Pull complete", resumed)

    # -- pull -------------------------------------------------------------------------------

    def pull(self, store: ImageStore, ref: str, *, platform: str | None = None) -> PullResult:
        """Pull ``ref`` (tag or digest) into ``store`` and name it; returns the image and what happened.

        Raises
        ------
        RemoteNotFoundError
            Unknown repository, tag, digest, or no manifest for the platform.
        RegistryError
            Unreachable registry (status 0), refused credentials (401), other answers.
        DigestMismatchError
            A manifest, config or layer whose bytes do not match its digest; nothing is named.
        """
        r = Reference.parse(ref)
        want = parse_platform(platform)
        sess = self._session(r.registry)
        scope = f"repository:{r.repository}:pull"
        self.emit(ProgressEvent(r.tag or r.digest, f"Pulling from {r.repository}"))
        top_digest, raw, media_type = self._get_manifest(sess, r, r.digest or r.tag, scope)
        if media_type in INDEX_TYPES:
            _, raw, media_type = self._select(sess, r, Index.from_bytes(raw), want, scope)
        manifest = Manifest.from_bytes(raw)
        config_bytes = self._get_small_blob(sess, r, manifest.config, scope, "config")
        config = ImageConfig.from_bytes(config_bytes)
        if len(config.diff_ids) != len(manifest.layers):
            raise RegistryError(f"{r.familiar}: manifest has {len(manifest.layers)} layers but the "
                                f"config lists {len(config.diff_ids)} diff_ids")
        name = str(Reference(r.registry, r.repository, r.tag)) if r.tag else None
        shown = Reference(r.registry, r.repository, r.tag, "" if r.tag else r.digest).familiar
        repo_digest = f"{r.name}@{top_digest}"

        prior = store.refs.get(name) if name else None
        up_to_date = False
        if prior is not None:
            try:
                old = store.manifest(prior.digest)
                up_to_date = old.config.digest == manifest.config.digest and all(
                    store.content.has(d) for d in config.diff_ids)
            except (NotFoundError, InvalidArgumentError):
                up_to_date = False

        layers: list[LayerResult] = []
        if not up_to_date:
            for desc in manifest.layers:
                if desc.urls:
                    raise RegistryError(f"{r.familiar}: foreign layers ({desc.digest}) are not supported")
            todo = []
            for desc, diff_id in zip(manifest.layers, config.diff_ids):
                if store.content.has(diff_id):
                    self.emit(ProgressEvent(desc.digest.short, "Already exists"))
                    layers.append(LayerResult(diff_id, desc.digest, desc.media_type, desc.size,
                                              "Already exists"))
                else:
                    self.emit(ProgressEvent(desc.digest.short, "Pulling fs layer"))
                    todo.append((desc, diff_id))
            # Leaving the pool waits for every worker, so a failure never leaves one writing.
            with ThreadPoolExecutor(max_workers=self.max_concurrent) as pool:
                futures = [pool.submit(self._pull_layer, sess, r, scope, store, d, i) for d, i in todo]
            layers.extend(fut.result() for fut in futures)
            meta = DistributionMetadata(store.root)
            for lr in layers:
                meta.add(lr.diff_id, digest=lr.digest, media_type=lr.media_type, size=lr.size,
                         registry=sess.host, repository=r.repository)
            order = {d: i for i, d in enumerate(config.diff_ids)}
            layers.sort(key=lambda lr: order[lr.diff_id])
        image = self._record(store, config_bytes, manifest.config.digest, config.diff_ids, name,
                             repo_digest)
        self.emit(ProgressEvent("", f"Digest: {top_digest}"))
        status = (f"Image is up to date for {shown}" if up_to_date
                  else f"Downloaded newer image for {shown}")
        self.emit(ProgressEvent("", f"Status: {status}"))
        return PullResult(image, top_digest, status, layers, config.platform)

    def _record(self, store: ImageStore, config_bytes: bytes, config_digest: Digest,
                diff_ids: tuple[Digest, ...], name: str | None, repo_digest: str) -> Image:
        """Store the local manifest (uncompressed layers, repo digests merged) and move names onto it."""
        store.content.put(config_bytes, config_digest, what="config")
        same = [img for img in store.images() if img.id == config_digest]
        repo_name = repo_digest.split("@")[0]
        digests: list[str] = []
        for img in same:
            digests.extend(d for d in repo_digests(img.manifest) if d not in digests)
        digests = [d for d in digests if d.split("@")[0] != repo_name] + [repo_digest]
        layers = tuple(Descriptor(MT_OCI_LAYER, d, store.content.size(d)) for d in diff_ids)
        manifest = Manifest(Descriptor(MT_OCI_CONFIG, config_digest, len(config_bytes)), layers,
                            MT_OCI_MANIFEST, {ANNOTATION_REPO_DIGESTS: ",".join(sorted(digests))})
        image = store.add_manifest(manifest.to_bytes(), name)
        moved = False
        for old in same:
            if old.manifest_digest == image.manifest_digest:
                continue
            for n in old.names:
                if n != name:
                    store.tag(image, n)
            store.remove(old)
            moved = True
        if moved or name is None:
            names = tuple(sorted(n for n, d in store.refs.names().items()
                                 if d.digest == image.manifest_digest))
            image = Image(image.id, image.manifest_digest, image.manifest, image.config, names)
        return image

    # -- push -------------------------------------------------------------------------------

    def push(
        self,
        store: ImageStore,
        image_ref_or_image: str | Image,
        ref: str | None = None,
        *,
        chunk_size: int = 16 << 20,
        compress_level: int = 1,
    ) -> str:
        """Push a local image to ``ref`` (default: the name it was given by); returns the manifest digest.

        Layers go as gzip (``compress_level``); blobs the registry has are skipped (HEAD), blobs in
        another repository of the same registry are mounted, blobs above ``chunk_size`` are uploaded
        in PATCH chunks.
        """
        if isinstance(image_ref_or_image, Image):
            image = image_ref_or_image
            target = ref or (image.names[0] if image.names else None)
            if target is None:
                raise InvalidArgumentError(f"image {image.short_id} has no name: give a reference to push to")
        else:
            image = store.resolve(image_ref_or_image)
            target = ref or image_ref_or_image
        r = Reference.parse(target)
        if not r.tag:
            raise InvalidArgumentError(f"cannot push to {target!r}: a tag is needed")
        r = Reference(r.registry, r.repository, r.tag)
        sess = self._session(r.registry)
        scope = f"repository:{r.repository}:pull,push"
        self.emit(ProgressEvent("", f"The push refers to repository [{r.familiar_name}]"))
        diff_ids = image.config.diff_ids
        if len(diff_ids) != len(image.manifest.layers):
            raise InvalidArgumentError(f"image {image.short_id}: layers and diff_ids disagree")
        for desc in reversed(image.manifest.layers):
            self.emit(ProgressEvent(desc.digest.short, "Preparing"))
        with ThreadPoolExecutor(max_workers=self.max_concurrent) as pool:
            futures = [pool.submit(self._push_layer, sess, r, scope, store, desc, diff_id, chunk_size,
                                   compress_level)
                       for desc, diff_id in zip(image.manifest.layers, diff_ids)]
        pushed = [fut.result() for fut in futures]
        config_bytes = store.content.read(image.manifest.config.digest)
        config_desc = Descriptor(MT_OCI_CONFIG, image.manifest.config.digest, len(config_bytes))
        if not self._blob_exists(sess, r, scope, config_desc.digest):
            self._upload(sess, r, (scope,), config_desc.digest, len(config_bytes),
                         lambda: iter([config_bytes]), chunk_size, "")
        manifest = Manifest(config_desc, tuple(pushed), MT_OCI_MANIFEST)
        body = manifest.to_bytes()
        digest = Digest.of(body)
        response = sess.request("PUT", f"/v2/{r.repository}/manifests/{r.tag}", scopes=(scope,),
                                headers={"Content-Type": MT_OCI_MANIFEST}, body=body)
        if response.status_code not in (200, 201):
            raise sess.error(response, f"cannot push manifest to {r.familiar}")
        answered = response.headers.get("docker-content-digest")
        if answered and answered != digest:
            raise DigestMismatchError(f"manifest pushed to {r.familiar}", digest, answered)
        self.emit(ProgressEvent("", f"{r.tag}: digest: {digest} size: {len(body)}"))
        self._record(store, config_bytes, image.id, diff_ids, None, f"{r.name}@{digest}")
        return str(digest)

    def _blob_exists(self, sess: RegistrySession, ref: Reference, scope: str, digest: str) -> bool:
        response = sess.request("HEAD", f"/v2/{ref.repository}/blobs/{digest}", scopes=(scope,))
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        raise sess.error(response, f"cannot check blob {digest} in {ref.name}")

    def _mount(self, sess: RegistrySession, ref: Reference, scope: str, digest: str, source: str) -> bool:
        response = sess.request(
            "POST", f"/v2/{ref.repository}/blobs/uploads/", params={"mount": digest, "from": source},
            scopes=(scope, f"repository:{source}:pull"),
        )
        if response.status_code == 201:
            return True
        if response.status_code == 202 and response.headers.get("location"):
            # The registry could not mount and opened an upload instead: close it.
            try:
                sess.request("DELETE", response.headers["location"], scopes=(scope,))
            except RegistryError:
                pass
        return False

    def _push_layer(self, sess: RegistrySession, ref: Reference, scope: str, store: ImageStore,
                    desc: Descriptor, diff_id: Digest, chunk_size: int, level: int) -> Descriptor:
        sid = desc.digest.short
        meta = DistributionMetadata(store.root)
        if layer_compression(desc.media_type):  # already compressed locally: push as it is
            path = store.content.path(desc.digest)
            if self._blob_exists(sess, ref, scope, desc.digest):
                self.emit(ProgressEvent(sid, "Layer already exists"))
            else:
                self._upload(sess, ref, (scope,), desc.digest, desc.size,
                             lambda: _file_chunks(path), chunk_size, sid)
                self.emit(ProgressEvent(sid, "Pushed"))
            return Descriptor(desc.media_type, desc.digest, desc.size)
        seen: set[str] = set()
        known = [e for e in meta.get(diff_id) if e.get("mediaType", "").endswith(("gzip", "zstd"))]
        for e in known:
            if e["digest"] in seen:
                continue
            seen.add(e["digest"])
            if self._blob_exists(sess, ref, scope, e["digest"]):
                self.emit(ProgressEvent(sid, "Layer already exists"))
                return Descriptor(e["mediaType"], Digest(e["digest"]), int(e["size"]))
        for e in known:
            if (e.get("registry") == sess.host and e.get("repository") != ref.repository
                    and self._mount(sess, ref, scope, e["digest"], e["repository"])):
                self.emit(ProgressEvent(sid, f"Mounted from {e['repository']}"))
                meta.add(diff_id, digest=e["digest"], media_type=e["mediaType"], size=int(e["size"]),
                         registry=sess.host, repository=ref.repository)
                return Descriptor(e["mediaType"], Digest(e["digest"]), int(e["size"]))
        tmp = store.content.ingest_dir / f"push-{os.getpid()}-{threading.get_ident()}-{diff_id.hex[:16]}"
        try:
            with open(tmp, "wb") as out, store.content.open(desc.digest) as src:
                hf = _HashingFile(out)
                with gzip.GzipFile(filename="", mode="wb", fileobj=hf, compresslevel=level, mtime=0) as gz:
                    while chunk := src.read(CHUNK):
                        gz.write(chunk)
            digest, size = Digest("sha256:" + hf.hash.hexdigest()), hf.size
            if self._blob_exists(sess, ref, scope, digest):
                self.emit(ProgressEvent(sid, "Layer already exists"))
            else:
                self._upload(sess, ref, (scope,), digest, size, lambda: _file_chunks(tmp), chunk_size, sid,
                             path=tmp)
                self.emit(ProgressEvent(sid, "Pushed"))
        finally:
            _unlink(tmp)
        meta.add(diff_id, digest=digest, media_type=MT_OCI_LAYER_GZIP, size=size, registry=sess.host,
                 repository=ref.repository)
        return Descriptor(MT_OCI_LAYER_GZIP, digest, size)

    def _upload(self, sess: RegistrySession, ref: Reference, scopes: tuple[str, ...], digest: str,
                size: int, body: Callable[[], Iterator[bytes]], chunk_size: int, sid: str,
                *, path: str | os.PathLike | None = None) -> None:
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
                    body=lambda start=start, n=n: _file_chunks(path, start, n),
                )
                if response.status_code != 202:
                    raise sess.error(response, f"chunk upload of {digest} to {ref.name} failed")
                location = str(response.url.join(response.headers.get("location", location)))
                offset += n
                self.emit(ProgressEvent(sid, "Pushing", offset, size))
            response = sess.request("PUT", _with_digest(location, digest), scopes=scopes,
                                    headers={"Content-Length": "0"}, body=b"")
        if response.status_code not in (201, 204):
            raise sess.error(response, f"upload of {digest} to {ref.name} failed")
        if sid:
            self.emit(ProgressEvent(sid, "Pushing", size, size))


def _with_digest(location: str, digest: str) -> str:
    # The upload URL carries the registry's own state in its query: keep it, add the digest.
    return str(httpx.URL(location).copy_merge_params({"digest": str(digest)}))


def _unlink(path: str | os.PathLike) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
