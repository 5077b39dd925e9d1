"""Applying a layer: an OCI layer tar extracted into the directory an overlay uses as a lower or
upper dir.

Each member passes the checks of :mod:`.filter` before anything is written for it; ``.wh.NAME``
becomes an overlay whiteout and ``DIR/.wh..wh..opq`` the opaque xattr (:mod:`.overlayfs`). Reading,
decompressing and hashing run on a thread while this one writes files; the diff_id comes out of the
same pass.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import queue
import shutil
import stat
import tarfile
import threading
from collections.abc import Callable, Mapping
from typing import BinaryIO, TypeVar, cast

from nbcontainer.compression import CHUNK, Readable
from nbcontainer.errors import InvalidArgumentError, UnsupportedHostError
from nbcontainer.layers.filter import check_member, check_parents
from nbcontainer.layers.overlayfs import USER_PREFIX, WHITEOUT_PREFIX, make_whiteout, xattr_prefix
from nbcontainer.layers.tario import (
    NODE_TYPES,
    XATTR_PAX_PREFIX,
    LayerStats,
    TarStream,
    corrupt_layer,
    open_decompressed,
)

__all__ = ["apply_layer"]

_XATTR_ERRNOS = (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM)  # not every fs takes every xattr
_O_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

_T = TypeVar("_T")


class _Counted:
    """Counts the bytes read through it, for progress reports."""

    def __init__(self, stream: Readable) -> None:
        self._stream, self.size = stream, 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.size += len(data)
        return data


class _ReadAhead:
    """Read, decompress and hash the layer on a thread while the caller writes files.

    zlib, lzma, zstandard and hashlib let go of the GIL on big buffers, so that work overlaps
    with the system calls of the extraction. ``read`` returns whole chunks, b"" at the end.
    """

    def __init__(self, stream: Readable, progress: Callable[[int], None] | None = None,
                 raw: _Counted | None = None) -> None:
        self.sha, self.size, self._done = hashlib.sha256(), 0, False
        self._progress, self._raw, self._reported = progress, raw, 0
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=8)
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream: Readable) -> None:
        try:
            while not self._done:
                data = stream.read(CHUNK)
                self.sha.update(data)
                self.size += len(data)
                self._queue.put(data)
                if not data:
                    return
        except Exception as err:  # noqa: BLE001 - whatever it is, the reader must hear of it
            self._queue.put(err)

    def read(self, size: int = -1) -> bytes:
        if self._done:
            return b""
        item = self._queue.get()
        if self._progress is not None and self._raw is not None and self._raw.size != self._reported:
            self._reported = self._raw.size
            self._progress(self._reported)
        if isinstance(item, BaseException):
            self._done = True
            raise item
        self._done = not item
        return item

    def close(self) -> None:
        self._done = True
        while not self._queue.empty():  # unblock a put(); the thread then sees _done
            self._queue.get_nowait()
        self._thread.join(timeout=5)

    def stats(self, entries: int, content_size: int) -> LayerStats:
        return LayerStats("sha256:" + self.sha.hexdigest(), self.size, entries, content_size)


class _Extractor:
    """Writes checked members under ``dest``; directory metadata waits for :meth:`finish`."""

    def __init__(self, dest: str, *, userxattr: bool) -> None:
        self.root = os.path.realpath(dest)
        self.as_root = os.geteuid() == 0
        self.userxattr = userxattr
        self.overlay = xattr_prefix(userxattr)
        self.known: set[str] = {""}  # real directories, checked or made by us
        self.dir_meta: dict[str, tuple[tarfile.TarInfo, Mapping[str, str]]] = {}

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def extract(self, tar: TarStream, member: tarfile.TarInfo) -> None:
        rel, kind, linkname, pax = check_member(member)
        if kind == "hardlink":
            check_parents(self.root, linkname.rpartition("/")[0], member.name, self.known, create=False)
        parent, _, base = rel.rpartition("/")
        if parent not in self.known:
            check_parents(self.root, parent, member.name, self.known, create=True)
        path = self.path(rel)
        if kind == "file":
            try:
                fd = os.open(path, _O_CREATE, 0o600)
            except FileExistsError:  # anything but a dir over a dir replaces what is there
                self._remove(rel)
                fd = os.open(path, _O_CREATE, 0o600)
            try:
                tar.copy_data(fd)
                self._set_meta(fd, member, pax)
            finally:
                os.close(fd)
        elif kind == "dir":
            if rel not in self.known:
                try:
                    os.mkdir(path, 0o700)
                except FileExistsError:
                    if not stat.S_ISDIR(os.lstat(path).st_mode):  # a dir over a dir merges
                        self._remove(rel)
                        os.mkdir(path, 0o700)
                self.known.add(rel)
            self.dir_meta[rel] = (member, pax)
        elif kind == "symlink":
            self._create(rel, lambda: os.symlink(member.linkname, path))
            self._set_meta(path, member, pax, chmod=False)  # Linux has no lchmod
        elif kind == "hardlink":
            target = self.path(linkname)
            try:
                is_file = not stat.S_ISDIR(os.lstat(target).st_mode)
            except FileNotFoundError:
                is_file = False
            if not is_file:
                raise InvalidArgumentError(f"layer member {member.name!r}: hardlink target "
                                           f"{linkname!r} is not a file of this layer")
            if linkname != rel:
                self._create(rel, lambda: os.link(target, path, follow_symlinks=False))
        elif kind in ("device", "fifo"):
            if kind == "device" and not self.as_root:
                return  # like rootless containerd: the runtime provides /dev
            dev = os.makedev(member.devmajor, member.devminor)
            self._create(rel, lambda: os.mknod(path, NODE_TYPES[member.type] | 0o600, dev))
            self._set_meta(path, member, pax)
        elif kind == "whiteout":
            self._whiteout(member, parent, base[len(WHITEOUT_PREFIX):])
        else:  # opaque; entries after it in this layer still land in the directory
            self._set_overlay_xattr(parent, "opaque", b"y")

    def finish(self) -> None:
        # children first, so a parent that loses its search bit does not hide them
        for rel in sorted(self.dir_meta, reverse=True):
            fd = os.open(self.path(rel), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                self._set_meta(fd, *self.dir_meta[rel])
            finally:
                os.close(fd)

    def _create(self, rel: str, make: Callable[[], _T]) -> _T:
        try:
            return make()
        except FileExistsError:
            self._remove(rel)
            return make()

    def _remove(self, rel: str) -> None:
        try:
            os.unlink(self.path(rel))
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            shutil.rmtree(self.path(rel))
            gone = rel + "/"
            self.known = {k for k in self.known if k != rel and not k.startswith(gone)}
            self.dir_meta = {k: v for k, v in self.dir_meta.items() if k != rel and not k.startswith(gone)}

    def _set_meta(self, target: int | str, member: tarfile.TarInfo, pax: Mapping[str, str], *,
                  chmod: bool = True) -> None:
        follow = isinstance(target, int)  # an fd is what it is; a path is never followed
        if self.as_root:
            os.chown(target, member.uid, member.gid, follow_symlinks=follow)
        for key, value in pax.items():  # after chown, which drops security.capability
            if key.startswith(XATTR_PAX_PREFIX):
                try:
                    os.setxattr(target, key[len(XATTR_PAX_PREFIX):], value.encode("utf-8", "surrogateescape"),
                                follow_symlinks=follow)
                except OSError as err:  # e.g. trusted.* when not root
                    if err.errno not in _XATTR_ERRNOS:
                        raise
        if chmod:
            os.chmod(target, member.mode & 0o7777)  # after chown, which clears setuid/setgid
        os.utime(target, (member.mtime, member.mtime), follow_symlinks=follow)

    def _whiteout(self, member: tarfile.TarInfo, parent: str, name: str) -> None:
        rel = f"{parent}/{name}" if parent else name
        path = self.path(rel)
        self._remove(rel)
        try:
            make_whiteout(path)
        except PermissionError:
            if not self.userxattr:
                raise UnsupportedHostError(
                    f"cannot create the overlay whiteout for {member.name!r}: mknod is not allowed",
                    fix="run as root, or pass userxattr=True for xattr whiteouts (Linux 6.7+)") from None
            fd = os.open(path, _O_CREATE, 0o600)
            try:
                os.setxattr(fd, USER_PREFIX + "whiteout", b"")
            finally:
                os.close(fd)
            # a dir holding xattr whiteouts says so with opaque=x, unless it is opaque anyway
            try:
                opaque = os.getxattr(self.path(parent), USER_PREFIX + "opaque")
            except OSError:
                opaque = b""
            if opaque != b"y":
                self._set_overlay_xattr(parent, "opaque", b"x")
        os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)

    def _set_overlay_xattr(self, rel: str, name: str, value: bytes) -> None:
        try:
            os.setxattr(self.path(rel), self.overlay + name, value, follow_symlinks=False)
        except OSError as err:
            if err.errno not in _XATTR_ERRNOS:
                raise
            raise UnsupportedHostError(
                f"cannot set {self.overlay + name} on {rel or '/'!r}: {err.strerror}",
                fix="run as root, or pass userxattr=True on a file system with user xattrs") from err


def apply_layer(tar: str | os.PathLike[str] | BinaryIO, dest: str, *, compression: str | None = None,
                userxattr: bool = False, progress: Callable[[int], None] | None = None) -> LayerStats:
    """Extract a layer tar into ``dest``, the directory an overlay will use as a lower or upper dir.

    Parameters
    ----------
    tar
        Path or binary stream of the layer blob, raw or gzip/zstd/xz compressed.
    dest
        Target directory, created if missing. Best a fresh one: build in a temp dir, then rename.
    compression
        See :func:`open_decompressed`; ``None`` sniffs the magic bytes.
    userxattr
        Write ``user.overlay.*`` xattrs (for overlays mounted with ``userxattr``) instead of
        ``trusted.overlay.*``, and fall back to xattr whiteouts where mknod is refused.
    progress
        Called with the running total of blob bytes read, about once per MiB and at the end.

    Returns
    -------
    LayerStats
        With the diff_id, hashed in the same pass.

    Raises
    ------
    UnsafeArchiveError
        A member could escape ``dest`` (see :func:`layer_filter`); nothing was written for it.
    InvalidArgumentError
        The archive is truncated or corrupt, or a hardlink names a file that is not in the layer.
    """
    os.makedirs(dest, exist_ok=True)
    extractor = _Extractor(dest, userxattr=userxattr)
    entries = content_size = 0
    raw: _Counted | None
    with contextlib.ExitStack() as stack:
        source, raw = tar, None
        if progress is not None:
            if isinstance(tar, (str, os.PathLike)):
                tar = stack.enter_context(open(tar, "rb", buffering=CHUNK))
            raw = _Counted(cast(Readable, tar))
            source = cast(BinaryIO, raw)
        stream = stack.enter_context(open_decompressed(source, compression))
        reader = _ReadAhead(stream, progress, raw)
        stack.callback(reader.close)
        tar_stream = TarStream(reader)
        try:
            for member in tar_stream:
                entries += 1
                if member.isreg():
                    content_size += member.size
                extractor.extract(tar_stream, member)
        except tarfile.TarError as err:
            raise corrupt_layer(err) from err
        while reader.read(CHUNK):  # the diff_id covers the padding after the end marker too
            pass
    extractor.finish()
    return reader.stats(entries, content_size)
