"""Content-addressed blob store: ``blobs/sha256/<hex>``, written through ``ingest/``.

A blob is written to a temp file in ``ingest/`` while it is hashed, verified against the size and
digest it was announced with, fsync'ed, and only then renamed into place with ``os.replace``. A
crash leaves at most a stray file in ``ingest/``, which :meth:`ContentStore.sweep` removes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from nbcontainer.errors import DigestMismatchError, NotFoundError
from nbcontainer.oci import Digest

CHUNK = 1 << 20
RESUMABLE_PREFIX = "pull-"


class Writer:
    """An open ingest: write bytes, then :meth:`commit` with the expected digest and size."""

    def __init__(self, store: ContentStore) -> None:
        self._store = store
        fd, self.path = tempfile.mkstemp(dir=store.ingest_dir, prefix="ingest-")
        self._file = os.fdopen(fd, "wb")
        # Held until commit/abort so that a sweep by another process skips a live ingest.
        fcntl.flock(self._file.fileno(), fcntl.LOCK_EX)
        self._hash = hashlib.sha256()
        self.size = 0
        self.digest: Digest | None = None

    def write(self, data: bytes | memoryview) -> int:
        self._file.write(data)
        self._hash.update(data)
        self.size += len(data)
        return len(data)

    def commit(self, expected: str | None = None, size: int | None = None, *, what: str = "blob") -> Digest:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        actual = Digest("sha256:" + self._hash.hexdigest())
        try:
            if size is not None and size != self.size:
                raise DigestMismatchError(what, f"size {size}", f"size {self.size}")
            if expected is not None and expected != actual:
                raise DigestMismatchError(what, expected, actual)
        except DigestMismatchError:
            self.abort()
            raise
        target = self._store.path(actual)
        os.chmod(self.path, 0o444)
        os.replace(self.path, target)
        self.digest = actual
        return actual

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.digest is None:
            self.abort()


class ContentStore:
    """Blobs by digest under ``root/blobs/sha256``; temp files under ``root/ingest``."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.blob_dir = self.root / "blobs" / "sha256"
        self.ingest_dir = self.root / "ingest"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.ingest_dir.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.blob_dir / Digest(digest).hex

    def has(self, digest: str) -> bool:
        return self.path(digest).exists()

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise NotFoundError(f"blob {digest} not found") from None

    def read(self, digest: str, *, verify: bool = False) -> bytes:
        try:
            data = self.path(digest).read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"blob {digest} not found") from None
        if verify:
            actual = Digest.of(data)
            if actual != digest:
                raise DigestMismatchError(f"blob {digest}", digest, actual)
        return data

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise NotFoundError(f"blob {digest} not found") from None

    def writer(self) -> Writer:
        return Writer(self)

    def put(self, data: bytes, expected: str | None = None, *, what: str = "blob") -> Digest:
        digest = Digest.of(data)
        if expected is not None and expected != digest:
            raise DigestMismatchError(what, expected, digest)
        if self.has(digest):
            return digest
        with self.writer() as w:
            w.write(data)
            return w.commit(digest, len(data), what=what)

    def put_stream(
        self,
        src: BinaryIO,
        expected: str | None = None,
        size: int | None = None,
        *,
        what: str = "blob",
        progress: Callable[[int], None] | None = None,
    ) -> Digest:
        """Copy a stream into the store, verifying ``expected`` digest and ``size`` when given."""
        with self.writer() as w:
            while True:
                chunk = src.read(CHUNK)
                if not chunk:
                    break
                w.write(chunk)
                if progress:
                    progress(len(chunk))
            return w.commit(expected, size, what=what)

    def put_file(self, path: str | os.PathLike, expected: str | None = None, *, what: str = "blob") -> Digest:
        with open(path, "rb") as f:
            return self.put_stream(f, expected, what=what)

    def adopt(self, path: str | os.PathLike, digest: str) -> Digest:
        """Move an already-hashed temp file (in the same filesystem) into place as ``digest``."""
        target = self.path(digest)
        if target.exists():
            os.unlink(path)
        else:
            os.chmod(path, 0o444)
            os.replace(path, target)
        return Digest(digest)

    def delete(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def walk(self) -> Iterator[Digest]:
        for entry in os.scandir(self.blob_dir):
            if len(entry.name) == 64:
                yield Digest("sha256:" + entry.name)

    def sweep(self) -> int:
        """Remove leftovers of interrupted writes; returns how many were removed."""
        n = 0
        for entry in os.scandir(self.ingest_dir):
            if entry.name.startswith(RESUMABLE_PREFIX):
                continue  # partial downloads are kept so the next pull resumes with Range
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
                n += 1
                continue
            try:
                fd = os.open(entry.path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a writer in another process still holds it
            finally:
                os.close(fd)
            try:
                os.unlink(entry.path)
                n += 1
            except FileNotFoundError:
                pass
        return n

    def verify(self, digest: str) -> bool:
        h = hashlib.sha256()
        with self.open(digest) as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        return "sha256:" + h.hexdigest() == digest
