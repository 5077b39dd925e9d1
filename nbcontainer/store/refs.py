"""Tags: the ``index.json`` of the store's OCI layout, one manifest descriptor per name.

Each named image is a manifest descriptor annotated with ``io.containerd.image.name`` (the full
reference, ``docker.io/library/busybox:latest``) and ``org.opencontainers.image.ref.name`` (the
same, which the OCI grammar allows, so ``skopeo``/``umoci`` can address it). An image that lost its
last name stays listed without annotations (Docker's ``<none>``) until it is removed.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nbcontainer.oci import (
    ANNOTATION_IMAGE_NAME,
    ANNOTATION_REF_NAME,
    MT_OCI_LAYOUT_VERSION,
    Descriptor,
    Index,
)


def atomic_write(path: str | os.PathLike, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` via a temp file in the same dir and ``os.replace``."""
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class RefStore:
    """The tag table of one store root, guarded by a file lock for writers."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.index_path = self.root / "index.json"
        self.lock_path = self.root / "locks" / "index.lock"
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        layout = self.root / "oci-layout"
        if not layout.exists():
            atomic_write(layout, json.dumps({"imageLayoutVersion": MT_OCI_LAYOUT_VERSION}).encode())
        if not self.index_path.exists():
            with self.locked():
                if not self.index_path.exists():
                    self._save([])

    @contextmanager
    def locked(self) -> Iterator[None]:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def entries(self) -> list[Descriptor]:
        try:
            data = self.index_path.read_bytes()
        except FileNotFoundError:
            return []
        return list(Index.from_bytes(data).manifests)

    def _save(self, entries: list[Descriptor]) -> None:
        data = json.dumps(Index(tuple(entries)).to_json(), indent=2).encode()
        atomic_write(self.index_path, data)

    def names(self) -> dict[str, Descriptor]:
        out: dict[str, Descriptor] = {}
        for d in self.entries():
            name = d.annotations.get(ANNOTATION_IMAGE_NAME)
            if name:
                out[name] = d
        return out

    def get(self, name: str) -> Descriptor | None:
        return self.names().get(name)

    def add(self, desc: Descriptor, name: str | None = None) -> Descriptor | None:
        """Point ``name`` at ``desc`` (or list ``desc`` unnamed); returns the descriptor it replaced."""
        with self.locked():
            entries = self.entries()
            replaced = None
            out: list[Descriptor] = []
            for d in entries:
                if name and d.annotations.get(ANNOTATION_IMAGE_NAME) == name:
                    replaced = d
                    continue
                if d.digest == desc.digest and not d.annotations:
                    continue  # the unnamed entry is superseded by a named one
                out.append(d)
            plain = Descriptor(desc.media_type, desc.digest, desc.size, platform=desc.platform)
            if name:
                out.append(plain.with_annotations({ANNOTATION_IMAGE_NAME: name, ANNOTATION_REF_NAME: name}))
            elif not any(d.digest == desc.digest for d in out):
                out.append(plain)
            if (replaced is not None and replaced.digest != desc.digest
                    and not any(d.digest == replaced.digest for d in out)):
                out.append(Descriptor(replaced.media_type, replaced.digest, replaced.size))
            self._save(out)
            return replaced

    def remove_name(self, name: str) -> Descriptor | None:
        """Drop one name; the manifest stays listed unnamed if no other name points at it."""
        with self.locked():
            entries = self.entries()
            hit = next((d for d in entries if d.annotations.get(ANNOTATION_IMAGE_NAME) == name), None)
            if hit is None:
                return None
            out = [d for d in entries if d is not hit]
            if not any(d.digest == hit.digest for d in out):
                out.append(Descriptor(hit.media_type, hit.digest, hit.size))
            self._save(out)
            return hit

    def remove_digest(self, digest: str) -> list[Descriptor]:
        """Drop every entry of one manifest; returns them."""
        with self.locked():
            entries = self.entries()
            gone = [d for d in entries if d.digest == digest]
            self._save([d for d in entries if d.digest != digest])
            return gone
