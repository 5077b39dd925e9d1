"""Save images from the store to one tar: a docker-archive, an OCI image layout, or both at once.

The default format, ``docker+oci``, is what Docker 25+ writes: an OCI image layout (``oci-layout``,
``index.json``, ``blobs/sha256/<hex>``) whose ``manifest.json`` and ``repositories`` also make it a
docker-archive, so ``docker load``, ``podman load``, ``skopeo … docker-archive:`` and
``skopeo … oci-archive:`` all read the same file. Every blob is written once, under its digest.

The tar is deterministic: members sorted by name, mtime 0, owner 0:0, fixed modes. Blob files are
streamed from the content store (``sendfile`` when both ends are files), never held in memory.
``compress`` gzip/zstd compresses the layers into temp files under ``ingest/`` first (the tar header
needs the size, the manifest the digest); their diff_ids, and so the image id, do not change.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

from nbcontainer.errors import InvalidArgumentError
from nbcontainer.oci import (
    ANNOTATION_IMAGE_NAME,
    ANNOTATION_REF_NAME,
    MT_DOCKER_LAYER_GZIP,
    MT_DOCKER_MANIFEST,
    MT_OCI_CONFIG,
    MT_OCI_LAYER_GZIP,
    MT_OCI_LAYER_ZSTD,
    MT_OCI_LAYOUT_VERSION,
    MT_OCI_MANIFEST,
    Descriptor,
    Digest,
    Index,
    Manifest,
    Reference,
    canonical_json,
    layer_compression,
)
from nbcontainer.store import Image, ImageStore

__all__ = ["COMPRESSIONS", "FORMATS", "save"]

FORMATS = ("docker+oci", "docker-archive", "oci-archive")
COMPRESSIONS = ("gzip", "zstd")
CHUNK = 4 << 20
GZIP_LEVEL = 6  # gzip(1)'s default; deterministic for the same input
ZSTD_LEVEL = 3  # zstd(1)'s default; multi-threaded output is the same for any worker count ≥ 1

Progress = Callable[[int], None]


def save(
    store: ImageStore,
    images: list[tuple[Image, list[str]]],
    out: str | os.PathLike | BinaryIO,
    *,
    format: str = "docker+oci",
    compress: str | None = None,
    progress: Progress | None = None,
) -> None:
    """Write ``images`` to one tar archive.

    Parameters
    ----------
    store
        The store holding the images' blobs.
    images
        ``(image, names)`` pairs; ``names`` are the tags to write (``busybox:latest``, full or
        familiar; written familiar in ``manifest.json`` as Docker does, full in ``index.json``).
        The same image twice has its names merged.
    out
        A path (written to a temp file beside it, then renamed) or a binary stream.
    format
        ``docker+oci`` (default, Docker 25+), ``docker-archive`` or ``oci-archive``.
    compress
        ``None`` (layers as stored, uncompressed), ``gzip`` or ``zstd``: layer blobs are
        compressed and manifests rewritten; diff_ids and image ids are unchanged.
    progress
        Called with the number of blob bytes written, e.g. ``tqdm(total=…, unit="B").update``.
    """
    if format not in FORMATS:
        raise InvalidArgumentError(
            f"unknown archive format {format!r} (expected one of {', '.join(FORMATS)})")
    if compress is not None and compress not in COMPRESSIONS:
        raise InvalidArgumentError(f"unknown compression {compress!r} (expected gzip or zstd)")
    if not images:
        raise InvalidArgumentError("no image to save")
    with ExitStack() as stack:
        plan = _Plan(store, compress, stack)
        for image, names in _merge(images):
            plan.add(image, names)
        members = plan.members(format)
        if isinstance(out, (str, os.PathLike)):
            _write_file(Path(out), members, progress)
        else:
            _write_members(out, members, progress)


# -- planning: which blobs and which JSON files go into the tar ---------------------------------


@dataclass
class _Member:
    name: str
    data: bytes | None = None  # small files (JSON) in memory
    path: Path | None = None  # blobs stream from disk
    size: int = 0


@dataclass
class _Plan:
    store: ImageStore
    compress: str | None
    stack: ExitStack
    blobs: dict[str, _Member] = field(default_factory=dict)  # digest -> member
    manifest_blobs: set[str] = field(default_factory=set)
    index: list[Descriptor] = field(default_factory=list)
    docker: list[dict] = field(default_factory=list)
    repositories: dict[str, dict[str, str]] = field(default_factory=dict)
    _compressed: dict[str, Descriptor] = field(default_factory=dict)  # stored digest -> compressed desc

    def add(self, image: Image, refs: list[Reference]) -> None:
        manifest = image.manifest
        content = self.store.content
        self._blob(manifest.config.digest, path=content.path(manifest.config.digest))
        layers: list[Descriptor] = []
        for layer in manifest.layers:
            if self.compress and layer_compression(layer.media_type) == "":
                layer = self._compressed_layer(layer, docker=manifest.media_type == MT_DOCKER_MANIFEST)
            else:
                self._blob(layer.digest, path=content.path(layer.digest))
            layers.append(layer)
        if tuple(layers) == manifest.layers:
            manifest_bytes = content.read(image.manifest_digest)  # as stored: its digest stays
        else:
            manifest = _rewritten(manifest, layers)
            manifest_bytes = manifest.to_bytes()
        manifest_desc = Descriptor(manifest.media_type, Digest.of(manifest_bytes), len(manifest_bytes),
                                   platform=image.config.platform if image.config.architecture else None)
        self._blob(manifest_desc.digest, data=manifest_bytes)
        self.manifest_blobs.add(manifest_desc.digest)

        for ref in refs:
            self.index.append(manifest_desc.with_annotations(
                {ANNOTATION_IMAGE_NAME: str(ref), ANNOTATION_REF_NAME: ref.tag}))
            if layers:
                self.repositories.setdefault(ref.familiar_name, {})[ref.tag] = layers[-1].digest.hex
        if not refs:
            self.index.append(manifest_desc)
        self.docker.append({
            "Config": _blob_name(manifest.config.digest),
            "RepoTags": [ref.familiar for ref in refs],
            "Layers": [_blob_name(layer.digest) for layer in layers],
        })

    def _blob(self, digest: str, *, path: Path | None = None, data: bytes | None = None) -> None:
        if digest in self.blobs:
            return
        if data is not None:
            size = len(data)
        else:
            assert path is not None, "a blob comes from bytes or from a file"
            size = path.stat().st_size
        self.blobs[digest] = _Member(_blob_name(digest), data, path, size)

    def _compressed_layer(self, layer: Descriptor, *, docker: bool) -> Descriptor:
        if layer.digest in self._compressed:
            return self._compressed[layer.digest]
        store = self.store.content
        fd, tmp = tempfile.mkstemp(dir=store.ingest_dir, prefix="save-")
        self.stack.callback(_unlink, tmp)
        with os.fdopen(fd, "wb") as dst, store.open(layer.digest) as src:
            fcntl.flock(dst.fileno(), fcntl.LOCK_EX)  # a concurrent ingest sweep skips it
            digest, size = _compress(src, dst, self.compress, layer.size)
        if self.compress == "zstd":
            media_type = MT_OCI_LAYER_ZSTD
        else:
            media_type = MT_DOCKER_LAYER_GZIP if docker else MT_OCI_LAYER_GZIP
        desc = Descriptor(media_type, digest, size)
        self._blob(digest, path=Path(tmp))
        self._compressed[layer.digest] = desc
        return desc

    def members(self, format: str) -> list[_Member]:
        out = [_Member("blobs/"), _Member("blobs/sha256/")]
        for digest, member in self.blobs.items():
            if format == "docker-archive" and digest in self.manifest_blobs:
                continue  # a docker-archive has no manifests, only configs and layers
            out.append(member)
        if format != "docker-archive":
            out.append(_json("oci-layout", {"imageLayoutVersion": MT_OCI_LAYOUT_VERSION}))
            out.append(_Member("index.json", Index(tuple(self.index)).to_bytes()))
        if format != "oci-archive":
            out.append(_json("manifest.json", self.docker))
            if self.repositories:
                out.append(_json("repositories", self.repositories))
        for m in out:
            if m.data is not None:
                m.size = len(m.data)
        return sorted(out, key=lambda m: m.name)


def _merge(images: list[tuple[Image, list[str]]]) -> list[tuple[Image, list[Reference]]]:
    by_id: dict[str, tuple[Image, list[Reference]]] = {}
    for image, names in images:
        _, refs = by_id.setdefault(image.id, (image, []))
        for name in names:
            ref = Reference.parse(name)
            if ref.digest:
                raise InvalidArgumentError(f"cannot save {name!r}: a digest reference is not a tag")
            if ref not in refs:
                refs.append(ref)
    return list(by_id.values())


def _rewritten(manifest: Manifest, layers: list[Descriptor]) -> Manifest:
    """The manifest over compressed layers; Docker v2s2 has no zstd type, so that becomes OCI."""
    if manifest.media_type == MT_DOCKER_MANIFEST and all(
        layer_compression(x.media_type) != "zstd" for x in layers
    ):
        return replace(manifest, layers=tuple(layers))
    config = replace(manifest.config, media_type=MT_OCI_CONFIG)
    return replace(manifest, config=config, layers=tuple(layers), media_type=MT_OCI_MANIFEST)


def _blob_name(digest: str) -> str:
    return f"blobs/sha256/{Digest(digest).hex}"


def _json(name: str, obj: object) -> _Member:
    return _Member(name, canonical_json(obj))


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _compress(src: BinaryIO, dst: BinaryIO, kind: str | None, size: int) -> tuple[Digest, int]:
    """Compress ``src`` into ``dst``; return the digest and size of the compressed bytes."""
    h = hashlib.sha256()
    n = 0

    def emit(data: bytes) -> None:
        nonlocal n
        if data:
            dst.write(data)
            h.update(data)
            n += len(data)

    if kind == "zstd":
        import zstandard

        cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1, write_content_size=True)
        chunker = cctx.chunker(size=size, chunk_size=CHUNK)
        while chunk := src.read(CHUNK):
            for out in chunker.compress(chunk):
                emit(out)
        for out in chunker.finish():
            emit(out)
    else:
        # zlib's gzip wrapper writes mtime 0 and no file name: the same bytes every time.
        comp = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
        while chunk := src.read(CHUNK):
            emit(comp.compress(chunk))
        emit(comp.flush())
    return Digest("sha256:" + h.hexdigest()), n


# -- writing the tar ---------------------------------------------------------------------------


def _write_file(path: Path, members: list[_Member], progress: Progress | None) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb", buffering=0) as f:
            _write_members(f, members, progress)
        os.replace(tmp, path)
    except OSError as err:
        _unlink(str(tmp))
        raise InvalidArgumentError(f"cannot write {path}: {err.strerror or err}") from err
    except BaseException:
        _unlink(str(tmp))
        raise


def _header(member: _Member) -> bytes:
    info = tarfile.TarInfo(member.name)
    if member.name.endswith("/"):
        info.type, info.mode, info.size = tarfile.DIRTYPE, 0o755, 0
    else:
        info.type, info.mode, info.size = tarfile.REGTYPE, 0o644, member.size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _write_members(out: BinaryIO, members: list[_Member], progress: Progress | None) -> None:
    try:
        out.flush()
        out_fd: int | None = out.fileno()
    except (AttributeError, OSError, ValueError):
        out_fd = None
    total = 0
    for member in members:
        out.write(_header(member))
        if member.data is not None:
            out.write(member.data)
        elif member.path is not None:
            _copy(member.path, member.size, out, out_fd, progress)
        pad = -member.size % tarfile.BLOCKSIZE
        if pad:
            out.write(b"\0" * pad)
        total += 512 + member.size + pad
    end = 2 * tarfile.BLOCKSIZE
    end += -(total + end) % tarfile.RECORDSIZE  # pad to whole records, as tar(1) does
    out.write(b"\0" * end)
    out.flush()


def _copy(path: Path, size: int, out: BinaryIO, out_fd: int | None, progress: Progress | None) -> None:
    with open(path, "rb", buffering=0) as src:
        if os.fstat(src.fileno()).st_size != size:
            raise InvalidArgumentError(f"blob {path.name} changed size while saving")
        done = 0
        if out_fd is not None:
            out.flush()
            try:
                while done < size:
                    n = os.sendfile(out_fd, src.fileno(), done, min(size - done, 1 << 30))
                    if n == 0:
                        break
                    done += n
                    if progress:
                        progress(n)
            except OSError:
                if done:
                    raise
        src.seek(done)
        while done < size:
            chunk = src.read(min(CHUNK, size - done))
            if not chunk:
                raise InvalidArgumentError(f"blob {path.name} is shorter than its size {size}")
            out.write(chunk)
            done += len(chunk)
            if progress:
                progress(len(chunk))
