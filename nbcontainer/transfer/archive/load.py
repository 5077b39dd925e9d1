"""Load images from a docker-archive or an OCI archive / layout into the store.

Accepted: legacy docker-archives (``docker save`` < 25: ``manifest.json``, ``<id>/layer.tar``,
``<id>.json``), podman's and Docker 25+'s (``manifest.json`` pointing into ``blobs/``), OCI archives
and OCI layout *directories* (``index.json``, nested indexes). The outer tar may be gzip, xz, zstd or
bzip2 compressed (it is then decompressed to a temp file under ``ingest/``); layers may be compressed
or plain. When ``manifest.json`` is present it is read, as ``docker load`` does.

Safety: members are read by name, never extracted. Every member name is checked first (no absolute
paths, no ``..``, links must stay inside the archive: podman's ``<id>/layer.tar`` is a link).
Every digest is verified: the config's (against its file name or descriptor), a layer blob's when
the archive names one, and always each layer's diff_id once decompressed. Layers go into the store
uncompressed through the ingest writer, so the blob digest is the diff_id. Names are registered only
after every blob of every image is stored: a failed load lists nothing new.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import platform
import posixpath
import re
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Self

from nbcontainer.compression import open_decompressed
from nbcontainer.errors import DigestMismatchError, InvalidArgumentError, NotFoundError, UnsafeArchiveError
from nbcontainer.oci import (
    ANNOTATION_IMAGE_NAME,
    ANNOTATION_REF_NAME,
    INDEX_TYPES,
    MANIFEST_TYPES,
    MT_OCI_CONFIG,
    MT_OCI_INDEX,
    MT_OCI_LAYER,
    MT_OCI_MANIFEST,
    Descriptor,
    Digest,
    ImageConfig,
    Index,
    Manifest,
    Reference,
    layer_compression,
)
from nbcontainer.store import Image, ImageStore

__all__ = ["LoadedImage", "load"]

CHUNK = 4 << 20
JSON_LIMIT = 64 << 20  # a config, manifest or index larger than this is not one
MAX_LINK_HOPS = 8
MAX_INDEX_DEPTH = 8

Progress = Callable[[int], None]


@dataclass(frozen=True)
class LoadedImage:
    """An image the load stored, and the names (full references) the archive gave it."""

    image: Image
    names: list[str]


def load(store: ImageStore, src: str | os.PathLike, *, progress: Progress | None = None) -> list[LoadedImage]:
    """Load every image of an archive file or OCI layout directory into ``store``.

    Parameters
    ----------
    store
        The destination store.
    src
        A tar file (plain or gzip/xz/zstd/bzip2 compressed) or a directory (OCI layout or an
        unpacked docker-archive).
    progress
        Called with the number of archive bytes read for layers, e.g. ``tqdm(total=…).update``.

    Returns
    -------
    list of LoadedImage
        In archive order; ``names`` empty for an unnamed image.

    Raises
    ------
    InvalidArgumentError
        Not an archive, an unknown format, a truncated archive, malformed JSON.
    NotFoundError
        A layer, config or manifest the archive refers to but does not hold.
    DigestMismatchError
        Content that does not hash to its digest or diff_id.
    UnsafeArchiveError
        A member with an absolute path, ``..``, or a link leaving the archive.
    """
    label = os.fspath(src)
    with ExitStack() as stack:
        source = _open_source(Path(src), label, store, stack)
        pending = _Loader(store, source, label, progress).run()
    # Only now, with every blob in place, do the images become visible.
    for p in pending:
        for name in p.names:
            store.refs.add(p.manifest, name)
        if not p.names:
            store.refs.add(p.manifest, None)
    listed = {img.manifest_digest: img for img in store.images()}
    return [LoadedImage(listed[p.manifest.digest], list(p.names)) for p in pending]


# -- reading -----------------------------------------------------------------------------------


class _Hashing:
    """Hashes and counts what is read through it (the blob as stored in the archive)."""

    def __init__(self, f: BinaryIO, progress: Progress | None) -> None:
        self._f = f
        self.hash = hashlib.sha256()
        self.verify = True
        self.size = 0
        self._progress = progress

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        if self.verify:
            self.hash.update(data)
        self.size += len(data)
        if self._progress and data:
            self._progress(len(data))
        return data

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    @property
    def digest(self) -> Digest:
        return Digest("sha256:" + self.hash.hexdigest())


# -- sources: a tar file or a directory, read member by member ---------------------------------


class _Slice:
    """A read-only view of ``size`` bytes at ``offset`` of a file descriptor (``pread``)."""

    def __init__(self, fd: int, offset: int, size: int) -> None:
        self._fd, self._offset, self._left = fd, offset, size

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or n > self._left:
            n = self._left
        if n == 0:
            return b""
        data = os.pread(self._fd, n, self._offset)
        if not data:
            raise EOFError("unexpected end of archive")
        self._offset += len(data)
        self._left -= len(data)
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _clean_name(name: str) -> str:
    """The member name normalised (``./a//b`` → ``a/b``); refuses absolute paths and ``..``."""
    if name.startswith("/"):
        raise UnsafeArchiveError(name, "absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(name, "'..' in path")
    return "/".join(parts)


class _TarSource:
    """Members of an uncompressed tar file, indexed once by name; data read with ``pread``."""

    def __init__(self, path: Path, label: str, stack: ExitStack) -> None:
        self.label = label
        self._fd = os.open(path, os.O_RDONLY)
        stack.callback(os.close, self._fd)
        file_size = os.fstat(self._fd).st_size
        try:
            tar = tarfile.open(path, "r:")  # noqa: SIM115 - closed by the ExitStack
        except tarfile.ReadError as err:
            raise InvalidArgumentError(
                f"{label}: not a docker-archive or OCI archive (not a tar file: {err})") from None
        stack.callback(tar.close)
        self._tar = tar
        self.members: dict[str, tarfile.TarInfo] = {}
        truncated = False
        try:
            for m in tar:
                name = _clean_name(m.name)
                if m.issym():
                    if m.linkname.startswith("/"):
                        raise UnsafeArchiveError(m.name, f"link to absolute path {m.linkname!r}")
                    target = posixpath.normpath(posixpath.join(posixpath.dirname(name), m.linkname))
                    if target == ".." or target.startswith("../"):
                        raise UnsafeArchiveError(m.name, f"link {m.linkname!r} leaves the archive")
                elif m.islnk():
                    _clean_name(m.linkname)
                elif not (m.isfile() or m.isdir()):
                    raise UnsafeArchiveError(m.name, "not a file, directory or link")
                if m.isfile() and m.offset_data + m.size > file_size:
                    truncated = True
                    break
                if name:
                    self.members[name] = m
        except tarfile.ReadError:
            truncated = True
        # A complete tar ends with zero blocks; a cut one stops at a header or inside data.
        # Refused even when the members needed are all there: the copy went wrong somewhere.
        end = os.pread(self._fd, tarfile.BLOCKSIZE, tar.offset)
        if truncated or len(end) < tarfile.BLOCKSIZE or end.count(0) != tarfile.BLOCKSIZE:
            raise _truncated(label)

    def _resolve(self, name: str) -> tarfile.TarInfo | None:
        name = _clean_name(name)
        for _ in range(MAX_LINK_HOPS):
            m = self.members.get(name)
            if m is None:
                return None
            if m.issym():
                name = posixpath.normpath(posixpath.join(posixpath.dirname(name), m.linkname))
            elif m.islnk():
                name = _clean_name(m.linkname)
            elif m.isfile():
                return m
            else:
                return None
        raise UnsafeArchiveError(name, "too many levels of links")

    def exists(self, name: str) -> bool:
        return self._resolve(name) is not None

    def missing(self, what: str) -> Exception:
        return NotFoundError(f"{self.label}: {what} missing from archive")

    def open(self, name: str, what: str) -> BinaryIO:
        m = self._resolve(name)
        if m is None:
            raise self.missing(what)
        if m.sparse is not None:
            return self._tar.extractfile(m)  # type: ignore[return-value]
        return _Slice(self._fd, m.offset_data, m.size)  # type: ignore[return-value]


class _DirSource:
    """Files of a directory (an OCI layout or an unpacked docker-archive)."""

    def __init__(self, root: Path, label: str) -> None:
        self.root = root.resolve()
        self.label = label

    def _path(self, name: str) -> Path | None:
        path = (self.root / _clean_name(name)).resolve()
        if path != self.root and self.root not in path.parents:
            raise UnsafeArchiveError(name, "link leaves the directory")
        return path if path.is_file() else None

    def exists(self, name: str) -> bool:
        return self._path(name) is not None

    def missing(self, what: str) -> Exception:
        return NotFoundError(f"{self.label}: {what} missing from archive")

    def open(self, name: str, what: str) -> BinaryIO:
        path = self._path(name)
        if path is None:
            raise self.missing(what)
        return open(path, "rb")


_Source = _TarSource | _DirSource


def _open_source(path: Path, label: str, store: ImageStore, stack: ExitStack) -> _Source:
    if path.is_dir():
        return _DirSource(path, label)
    try:
        f = stack.enter_context(open(path, "rb"))  # noqa: SIM115 - it is a context manager
    except FileNotFoundError:
        raise NotFoundError(f"archive {label!r} not found") from None
    with open_decompressed(f, corrupt=lambda kind, err: _truncated(label, f"{kind}: {err}")) as reader:
        if not reader.compression:
            return _TarSource(path, label, stack)
        # Random access needs a plain file: decompress once into the store's ingest dir.
        fd, tmp = tempfile.mkstemp(dir=store.content.ingest_dir, prefix="load-")
        stack.callback(_unlink, tmp)
        with os.fdopen(fd, "wb") as out:
            fcntl.flock(out.fileno(), fcntl.LOCK_EX)  # a concurrent ingest sweep skips it
            while chunk := reader.read(CHUNK):
                out.write(chunk)
    return _TarSource(Path(tmp), label, stack)


def _truncated(label: str, detail: str = "") -> InvalidArgumentError:
    return InvalidArgumentError(f"{label}: archive is truncated" + (f" ({detail})" if detail else ""))


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


# -- the loader --------------------------------------------------------------------------------


@dataclass
class _Pending:
    manifest: Descriptor
    names: list[str] = field(default_factory=list)


# Names that carry a digest: ``blobs/sha256/<hex>`` (Docker 25+, podman) and ``<hex>.json`` (legacy).
_HEX_NAME = re.compile(r"^(?:blobs/sha256/([0-9a-f]{64})|([0-9a-f]{64})\.json)$")
_BLOB_NAME = re.compile(r"blobs/sha256/([0-9a-f]{64})")


class _Loader:
    def __init__(self, store: ImageStore, source: _Source, label: str, progress: Progress | None) -> None:
        self.store = store
        self.source = source
        self.label = label
        self.progress = progress
        self.present = {img.id: img for img in store.images()}
        self.pending: dict[str, _Pending] = {}

    def run(self) -> list[_Pending]:
        try:
            return self._run()
        except InvalidArgumentError as err:
            # schema errors of a config, manifest or index (oci.py) get the archive's name in front
            if type(err) is not InvalidArgumentError or str(err).startswith(f"{self.label}:"):
                raise
            raise InvalidArgumentError(f"{self.label}: {err}") from None
        except RecursionError:  # JSON nested too deep for json.loads (oci.py parses index.json)
            raise InvalidArgumentError(f"{self.label}: invalid JSON: nested too deeply") from None

    def _run(self) -> list[_Pending]:
        if self.source.exists("manifest.json"):
            self._docker_archive()
        elif self.source.exists("index.json"):
            index = Index.from_bytes(self._read("index.json", "index.json"))
            for desc in _select(index.manifests, nested=False):
                self._oci(desc, _oci_names(desc.annotations), 0)
        else:
            raise InvalidArgumentError(
                f"{self.label}: not a docker-archive or OCI archive (no manifest.json or index.json)")
        if not self.pending:
            raise InvalidArgumentError(f"{self.label}: the archive holds no image")
        return list(self.pending.values())

    # -- reading -------------------------------------------------------------------------

    def _read(self, name: str, what: str) -> bytes:
        with self.source.open(name, what) as f:
            try:
                data = f.read(JSON_LIMIT + 1)
            except (EOFError, tarfile.ReadError):
                raise _truncated(self.label) from None
        if len(data) > JSON_LIMIT:
            raise InvalidArgumentError(f"{self.label}: {what} is larger than {JSON_LIMIT} bytes")
        return data

    def _blob(self, desc: Descriptor, what: str) -> bytes:
        data = self._read(f"blobs/sha256/{desc.digest.hex}", f"{what} {desc.digest}")
        actual = Digest.of(data)
        if actual != desc.digest:
            raise DigestMismatchError(f"{self.label}: {what}", desc.digest, actual)
        if len(data) != desc.size:
            raise DigestMismatchError(f"{self.label}: {what} {desc.digest}", f"size {desc.size}",
                                      f"size {len(data)}")
        return data

    # -- docker-archive ------------------------------------------------------------------

    def _docker_archive(self) -> None:
        entries = _docker_entries(self._read("manifest.json", "manifest.json"), self.label)
        for config_name, layer_names, repo_tags in entries:
            tags = [self._name(t) for t in repo_tags]
            config_bytes = self._read(config_name, f"config {config_name}")
            digest = Digest.of(config_bytes)
            named = _HEX_NAME.match(_clean_name(config_name))
            named_hex = named and (named.group(1) or named.group(2))
            if named_hex and named_hex != digest.hex:
                raise DigestMismatchError(f"{self.label}: config {config_name}",
                                          "sha256:" + named_hex, digest)
            config = ImageConfig.from_bytes(config_bytes)
            if len(layer_names) != len(config.diff_ids):
                raise InvalidArgumentError(
                    f"{self.label}: image {digest.short} has {len(config.diff_ids)} diff_ids "
                    f"but {len(layer_names)} layers")
            blobs = []
            for name in layer_names:
                hit = _BLOB_NAME.fullmatch(_clean_name(name))
                blobs.append((name, Digest("sha256:" + hit.group(1)) if hit else None, None))
            self._image(digest, config_bytes, config, blobs, None, tags)

    # -- OCI layout ----------------------------------------------------------------------

    def _oci(self, desc: Descriptor, names: list[str], depth: int) -> None:
        if depth > MAX_INDEX_DEPTH:
            raise InvalidArgumentError(f"{self.label}: indexes nested deeper than {MAX_INDEX_DEPTH}")
        data = self._blob(desc, "manifest")
        kind = desc.media_type
        if kind not in INDEX_TYPES and kind not in MANIFEST_TYPES:
            kind = MT_OCI_INDEX if "manifests" in _json_keys(data) else MT_OCI_MANIFEST
        if kind in INDEX_TYPES:
            for child in _select(Index.from_bytes(data).manifests, nested=True):
                self._oci(child, names or _oci_names(child.annotations), depth + 1)
            return
        manifest = Manifest.from_bytes(data)
        config_bytes = self._blob(manifest.config, "config")
        config = ImageConfig.from_bytes(config_bytes)
        if len(manifest.layers) != len(config.diff_ids):
            raise InvalidArgumentError(
                f"{self.label}: image {manifest.config.digest.short} has {len(config.diff_ids)} "
                f"diff_ids but {len(manifest.layers)} layers")
        blobs = [(f"blobs/sha256/{x.digest.hex}", x.digest, x) for x in manifest.layers]
        # A manifest over plain tar layers is already what the store keeps: keep its bytes.
        as_is = all(layer_compression(x.media_type) == "" and x.digest == d
                    for x, d in zip(manifest.layers, config.diff_ids, strict=True))
        self._image(manifest.config.digest, config_bytes, config, blobs,
                    (desc, data) if as_is else None, names)

    # -- storing -------------------------------------------------------------------------

    def _image(
        self, config_digest: Digest, config_bytes: bytes, config: ImageConfig,
        blobs: Sequence[tuple[str, Digest | None, Descriptor | None]],
        manifest: tuple[Descriptor, bytes] | None, names: list[str],
    ) -> None:
        pending = self.pending.get(config_digest)
        if pending is None:
            pending = self.pending[config_digest] = _Pending(
                self._store_image(config_digest, config_bytes, config, blobs, manifest))
        for name in names:
            if name not in pending.names:
                pending.names.append(name)

    def _store_image(
        self, config_digest: Digest, config_bytes: bytes, config: ImageConfig,
        blobs: Sequence[tuple[str, Digest | None, Descriptor | None]],
        manifest: tuple[Descriptor, bytes] | None,
    ) -> Descriptor:
        content = self.store.content
        have = self.present.get(config_digest)
        if have is not None and all(content.has(x.digest) for x in have.manifest.layers):
            # Already here (Docker's "image already exists"): list the stored manifest again.
            return Descriptor(have.manifest.media_type, have.manifest_digest,
                              content.size(have.manifest_digest))
        layers = [self._layer(name, blob, desc, diff_id)
                  for (name, blob, desc), diff_id in zip(blobs, config.diff_ids, strict=True)]
        content.put(config_bytes, config_digest, what=f"{self.label}: config")
        if manifest is not None:
            desc, data = manifest
            content.put(data, desc.digest, what=f"{self.label}: manifest")
            return Descriptor(desc.media_type or Manifest.from_bytes(data).media_type, desc.digest, len(data))
        built = Manifest(Descriptor(MT_OCI_CONFIG, config_digest, len(config_bytes)), tuple(layers))
        data = built.to_bytes()
        return Descriptor(built.media_type, content.put(data), len(data))

    def _layer(self, name: str, blob: Digest | None, desc: Descriptor | None, diff_id: Digest) -> Descriptor:
        content = self.store.content
        what = f"layer {name}"
        if content.has(diff_id):
            if not self.source.exists(name):
                raise self.source.missing(what)
            return Descriptor(MT_OCI_LAYER, diff_id, content.size(diff_id))
        with self.source.open(name, what) as f, content.writer() as w:
            hashing = _Hashing(f, self.progress)
            try:
                corrupt = functools.partial(self._corrupt, what)
                with open_decompressed(hashing, corrupt=corrupt) as reader:
                    # A plain layer named by its diff_id is verified by the writer's own hash.
                    hashing.verify = bool(reader.compression) or (blob is not None and blob != diff_id)
                    while chunk := reader.read(CHUNK):
                        w.write(chunk)
                hashing.drain()
            except (EOFError, tarfile.ReadError) as err:
                raise _truncated(self.label, f"{what}: {err}") from None
            if hashing.verify and blob is not None and hashing.digest != blob:
                raise DigestMismatchError(f"{self.label}: {what}", blob, hashing.digest)
            if desc is not None and hashing.size != desc.size:
                raise DigestMismatchError(f"{self.label}: {what}", f"size {desc.size}",
                                          f"size {hashing.size}")
            w.commit(diff_id, what=f"{self.label}: {what} (diff_id)")
            return Descriptor(MT_OCI_LAYER, diff_id, w.size)

    def _corrupt(self, what: str, kind: str, err: Exception) -> InvalidArgumentError:
        if isinstance(err, EOFError):
            return _truncated(self.label, f"{what}: {err}")
        return InvalidArgumentError(f"{self.label}: {what} is corrupt ({kind}: {err})")

    def _name(self, name: str) -> str:
        try:
            return str(Reference.parse(name))
        except InvalidArgumentError as err:
            raise InvalidArgumentError(f"{self.label}: {err}") from None


def _docker_entries(data: bytes, label: str) -> list[tuple[str, list[str], list[str]]]:
    """``(Config, Layers, RepoTags)`` of each ``manifest.json`` entry."""
    try:
        obj = json.loads(data)
        out = []
        for entry in obj:
            config, layers, tags = entry["Config"], entry.get("Layers") or [], entry.get("RepoTags") or []
            if not isinstance(config, str) or not all(isinstance(x, str) for x in [*layers, *tags]):
                raise ValueError("Config, Layers and RepoTags must be strings")
            out.append((config, list(layers), list(tags)))
    except (ValueError, TypeError, KeyError, RecursionError) as err:
        raise InvalidArgumentError(f"{label}: invalid manifest.json: {err}") from None
    return out


def _json_keys(data: bytes) -> set[str]:
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        return set()
    return set(obj) if isinstance(obj, dict) else set()


def _oci_names(annotations: dict[str, str]) -> list[str]:
    """containerd's full name if given; else ``ref.name`` when it is a whole reference, not a bare tag."""
    for key in (ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME):
        name = annotations.get(key, "")
        if not name or (key == ANNOTATION_REF_NAME and "/" not in name and ":" not in name):
            continue
        try:
            return [str(Reference.parse(name))]
        except InvalidArgumentError:
            continue
    return []


_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "armv6l": "arm", "i686": "386",
         "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


def _select(descs: tuple[Descriptor, ...], *, nested: bool) -> list[Descriptor]:
    """Manifests to load: skip attestations; of platform variants, this host's (or the first)."""
    out = [d for d in descs
           if "vnd.docker.reference.type" not in d.annotations
           and not (d.platform and d.platform.os == "unknown")]
    with_platform = [d for d in out if d.platform]
    if not with_platform:
        return out
    arch = _ARCH.get(platform.machine(), platform.machine())
    mine = [d for d in with_platform
            if d.platform is not None and d.platform.architecture == arch and d.platform.os == "linux"]
    if nested:
        return mine[:1] or out[:1]
    return ([d for d in out if not d.platform] + mine) if mine else out
