"""OCI layer tars in and out of overlay directories.

A *layer* is a tar of file system changes; its *diff_id* is the sha256 of the uncompressed tar.
Deletions travel as *whiteouts*: ``.wh.NAME`` removes NAME from the layers below, and
``DIR/.wh..wh..opq`` makes DIR *opaque* (hides what is below it). overlayfs spells the same two
things as a 0/0 character device and an ``overlay.opaque=y`` xattr.

- :func:`apply_layer`: tar -> layer dir, whiteouts into their overlay form; each member passes
  :func:`layer_filter` before anything is written for it.
- :func:`write_layer`: overlay upper dir -> tar, overlay form back into whiteouts, sorted, so the
  same upper dir always gives the same bytes and the same diff_id.
- :func:`iter_layer`: look at a layer without extracting it.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import hashlib
import os
import queue
import shutil
import stat
import tarfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import BinaryIO, cast

from nbcontainer.layers.tario import _CHUNK, _T, _corrupt, _Readable, _TarStream, open_decompressed
from nbcontainer.errors import InvalidArgumentError, UnsafeArchiveError, UnsupportedHostError

__all__ = ["LayerStats", "apply_layer", "iter_layer", "layer_filter", "open_decompressed", "write_layer"]

WHITEOUT_PREFIX = ".wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"

_OVERLAY_XATTRS = ("trusted.overlay.", "user.overlay.")
_XATTR = "SCHILY.xattr."
_XATTR_ERRNOS = (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM)  # not every fs takes every xattr
_O_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_KINDS = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.CONTTYPE: "file",
          tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hardlink",
          tarfile.CHRTYPE: "device", tarfile.BLKTYPE: "device", tarfile.FIFOTYPE: "fifo"}
_NODE_TYPES = {tarfile.CHRTYPE: stat.S_IFCHR, tarfile.BLKTYPE: stat.S_IFBLK, tarfile.FIFOTYPE: stat.S_IFIFO}


@dataclass(frozen=True)
class LayerStats:
    """What one pass over a layer tar saw."""

    diff_id: str        # 'sha256:<hex>' of the uncompressed tar bytes
    size: int           # bytes of the uncompressed tar
    entries: int        # number of tar members, whiteouts included
    content_size: int   # sum of regular-file sizes


# -- the filter ---------------------------------------------------------------------------------

def _normalise(name: str, member: str, what: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    if name and name[0] not in "./" and not name.endswith("/") and not any(
            bad in name for bad in ("//", "/.", "\0")):
        return name  # already clean, the common case
    if name.startswith("/"):
        raise UnsafeArchiveError(member, f"{what} is absolute")
    if "\0" in name:
        raise UnsafeArchiveError(member, f"{what} contains a NUL byte")
    parts = [p for p in name.split("/") if p and p != "."]
    if ".." in parts:
        raise UnsafeArchiveError(member, f"{what} has a '..' component")
    return "/".join(parts)


def _check_member(member: tarfile.TarInfo) -> tuple[str, str, str, Mapping[str, str]]:
    """The half of the filter that needs no file system: (name, kind, linkname, pax_headers)."""
    name = member.name
    rel = _normalise(name, name, "name")
    if (kind := _KINDS.get(member.type)) is None:
        raise UnsafeArchiveError(name, f"unsupported member type {member.type!r}")
    if WHITEOUT_PREFIX in rel:
        *dirs, base = rel.split("/")
        if any(part.startswith(WHITEOUT_PREFIX) for part in dirs):
            raise UnsafeArchiveError(name, "a '.wh.' name can only be the last path component")
        if base.startswith(WHITEOUT_PREFIX):
            if base == WHITEOUT_OPAQUE:
                kind = "opaque"
            elif base.startswith(WHITEOUT_PREFIX * 2):
                raise UnsafeArchiveError(name, "'.wh..wh.' names other than '.wh..wh..opq' are refused")
            elif base[len(WHITEOUT_PREFIX):] in ("", ".", ".."):
                raise UnsafeArchiveError(name, "the whiteout names nothing")
            else:
                kind = "whiteout"
            if not member.isreg():
                raise UnsafeArchiveError(name, "a whiteout must be a regular file")
    if not rel and kind != "dir":
        raise UnsafeArchiveError(name, "the archive root can only be a directory")
    linkname = member.linkname
    if "\0" in linkname:
        raise UnsafeArchiveError(name, "link target contains a NUL byte")
    if kind == "hardlink" and not (linkname := _normalise(linkname, name, "hardlink target")):
        raise UnsafeArchiveError(name, "hardlink to the archive root")
    pax = member.pax_headers
    if pax and any(k.startswith(_XATTR) and k[13:].startswith(_OVERLAY_XATTRS) for k in pax):
        # overlay-private xattrs (redirect, metacopy, origin...) would steer the mount
        pax = {k: v for k, v in pax.items()
               if not (k.startswith(_XATTR) and k[13:].startswith(_OVERLAY_XATTRS))}
    return rel, kind, linkname, pax


def _check_parents(root: str, rel: str, member: str, known: set[str], *, create: bool) -> None:
    """Refuse a symlink among the ancestors ``rel`` of a member that exist; create the others.

    ``known`` holds the dirs already seen to be real directories, so a layer costs an lstat per
    directory rather than per member.
    """
    if rel in known:
        return
    sub = ""
    for part in rel.split("/"):
        sub = f"{sub}/{part}" if sub else part
        if sub in known:
            continue
        path = f"{root}/{sub}"
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            if not create:
                return  # nothing deeper exists either
            os.mkdir(path, 0o755)
            os.chmod(path, 0o755)  # implicit parents do not depend on the umask
            known.add(sub)
            continue
        if stat.S_ISDIR(mode):
            known.add(sub)
        elif stat.S_ISLNK(mode):
            resolved = os.path.realpath(path)
            where = "inside" if resolved == root or resolved.startswith(root + "/") else "outside"
            raise UnsafeArchiveError(member, f"parent {sub!r} is a symlink to {os.readlink(path)!r} "
                                             f"({where} the destination); members are never "
                                             "written through symlinks")
        else:
            raise InvalidArgumentError(f"layer member {member!r}: parent {sub!r} is not a directory")


def layer_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """Check a layer member against ``dest``, like tarfile's extraction filters.

    Keeps ownership, all mode bits (setuid included), devices and xattrs. Refuses absolute names,
    ``..`` components, members below a symlink that is already in ``dest`` (we never write
    through a symlink, so where a symlink points is never a problem: ``/bin/sh -> /bin/busybox``
    is normal in a root file system), hardlinks to absolute or ``..`` targets or through such a
    symlink, and ``.wh.`` names other than ``.wh.NAME`` and ``.wh..wh..opq``. Overlay-private
    xattrs are dropped.

    Returns
    -------
    tarfile.TarInfo
        The member, or a copy with its name and hardlink target normalised (no ``./``, no trailing
        ``/``; the archive root is ``"."``) and overlay xattrs dropped.

    Raises
    ------
    UnsafeArchiveError
        The member could write outside ``dest``, or is a malformed whiteout.
    """
    rel, kind, linkname, pax = _check_member(member)
    root, known = os.path.realpath(dest), {""}
    _check_parents(root, rel.rpartition("/")[0], member.name, known, create=False)
    if kind == "hardlink":
        _check_parents(root, linkname.rpartition("/")[0], member.name, known, create=False)
    if (rel or ".", linkname, pax) == (member.name, member.linkname, member.pax_headers):
        return member
    clean = copy.copy(member)
    clean.name, clean.linkname, clean.pax_headers = rel or ".", linkname, pax
    return clean


# -- apply --------------------------------------------------------------------------------------

class _Counted:
    """Counts the bytes read through it, for progress reports."""

    def __init__(self, stream: _Readable) -> None:
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

    def __init__(self, stream: _Readable, progress: Callable[[int], None] | None = None,
                 raw: _Counted | None = None) -> None:
        self.sha, self.size, self._done = hashlib.sha256(), 0, False
        self._progress, self._raw, self._reported = progress, raw, 0
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=8)
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream: _Readable) -> None:
        try:
            while not self._done:
                data = stream.read(_CHUNK)
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
        self.overlay = "user.overlay." if userxattr else "trusted.overlay."
        self.known: set[str] = {""}  # real directories, checked or made by us
        self.dir_meta: dict[str, tuple[tarfile.TarInfo, Mapping[str, str]]] = {}

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def extract(self, tar: _TarStream, member: tarfile.TarInfo) -> None:
        rel, kind, linkname, pax = _check_member(member)
        if kind == "hardlink":
            _check_parents(self.root, linkname.rpartition("/")[0], member.name, self.known, create=False)
        parent, _, base = rel.rpartition("/")
        if parent not in self.known:
            _check_parents(self.root, parent, member.name, self.known, create=True)
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
            self._create(rel, lambda: os.mknod(path, _NODE_TYPES[member.type] | 0o600, dev))
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
            if key.startswith(_XATTR):
                try:
                    os.setxattr(target, key[13:], value.encode("utf-8", "surrogateescape"),
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
            os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))
        except PermissionError:
            if not self.userxattr:
                raise UnsupportedHostError(
                    f"cannot create the overlay whiteout for {member.name!r}: mknod is not allowed",
                    fix="run as root, or pass userxattr=True for xattr whiteouts (Linux 6.7+)") from None
            fd = os.open(path, _O_CREATE, 0o600)
            try:
                os.setxattr(fd, "user.overlay.whiteout", b"")
            finally:
                os.close(fd)
            # a dir holding xattr whiteouts says so with opaque=x, unless it is opaque anyway
            try:
                opaque = os.getxattr(self.path(parent), "user.overlay.opaque")
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
                tar = stack.enter_context(open(tar, "rb", buffering=_CHUNK))
            raw = _Counted(cast(_Readable, tar))
            source = cast(BinaryIO, raw)
        stream = stack.enter_context(open_decompressed(source, compression))
        reader = _ReadAhead(stream, progress, raw)
        stack.callback(reader.close)
        tar_stream = _TarStream(reader)
        try:
            for member in tar_stream:
                entries += 1
                if member.isreg():
                    content_size += member.size
                extractor.extract(tar_stream, member)
        except tarfile.TarError as err:
            raise _corrupt(err) from err
        while reader.read(_CHUNK):  # the diff_id covers the padding after the end marker too
            pass
    extractor.finish()
    return reader.stats(entries, content_size)


# -- write --------------------------------------------------------------------------------------

def _xattrs(path: str) -> dict[str, bytes]:
    try:
        return {n: os.getxattr(path, n, follow_symlinks=False)
                for n in os.listxattr(path, follow_symlinks=False)}
    except OSError as err:
        if err.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}
        raise


def _children(path: str, ns: str) -> list[tuple[str, str, os.stat_result, dict[str, bytes], bool]]:
    """(name in the tar, path, lstat, xattrs, is a whiteout) of a dir, sorted bytewise by name."""
    out = []
    with os.scandir(path) as it:
        for entry in it:
            if entry.name.startswith(WHITEOUT_PREFIX):
                raise InvalidArgumentError(f"{entry.path}: names starting with '.wh.' are reserved "
                                           "for whiteouts and cannot go into a layer")
            st = entry.stat(follow_symlinks=False)
            xattrs = _xattrs(entry.path)
            whiteout = (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0) or (
                stat.S_ISREG(st.st_mode) and st.st_size == 0 and ns + "whiteout" in xattrs)
            out.append((WHITEOUT_PREFIX * whiteout + entry.name, entry.path, st, xattrs, whiteout))
    out.sort(key=lambda child: os.fsencode(child[0]))
    return out


def _walk(root: str, ns: str) -> Iterator[tuple[str, str, os.stat_result, dict[str, bytes], bool]]:
    """:func:`_children` of the whole tree, depth first, names relative to root; no symlinks followed."""
    stack = [("", iter(_children(root, ns)))]
    while stack:
        prefix, children = stack[-1]
        if (child := next(children, None)) is None:
            stack.pop()
            continue
        name, path, st, xattrs, whiteout = child
        yield prefix + name, path, st, xattrs, whiteout
        if stat.S_ISDIR(st.st_mode):
            stack.append((f"{prefix}{name}/", iter(_children(path, ns))))


def write_layer(upper: str, out: BinaryIO, *, userxattr: bool = False) -> LayerStats:
    """Write the overlay upper dir ``upper`` to ``out`` as a deterministic OCI layer tar.

    Only ``upper`` is walked, so the cost follows the size of the change. Entries are PAX, sorted
    by name within each directory, parents first; they keep uid, gid, mode and whole-second mtime
    and carry empty user/group names and no atime/ctime, so the same dir gives the same bytes.
    Whiteouts (0/0 char devices, or empty files with ``overlay.whiteout``) become ``.wh.NAME``
    (mode 0, owner 0); a dir with ``overlay.opaque=y`` is followed by ``DIR/.wh..wh..opq``; files
    sharing an inode become hardlinks to the first of them. Other overlay xattrs and the host's
    ``security.selinux`` label are dropped; other xattrs become ``SCHILY.xattr.*`` records.

    Parameters
    ----------
    upper
        The upper dir of a stopped container.
    out
        Writable binary stream; receives the uncompressed tar and is left open.
    userxattr
        Read ``user.overlay.*`` instead of ``trusted.overlay.*`` xattrs.

    Returns
    -------
    LayerStats
        With the diff_id of the bytes written.

    Raises
    ------
    InvalidArgumentError
        A file in ``upper`` is itself named ``.wh.*``.
    UnsupportedHostError
        The upper dir holds metacopy or redirect entries, which need the lower layers.
    """
    ns = "user.overlay." if userxattr else "trusted.overlay."
    sha, size = hashlib.sha256(), 0
    entries = content_size = 0
    links: dict[tuple[int, int], str] = {}

    def emit(data: bytes | memoryview) -> None:
        nonlocal size
        sha.update(data)
        out.write(data)
        size += len(data)

    def add(info: tarfile.TarInfo) -> None:
        nonlocal entries
        emit(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))  # not the locale's
        entries += 1

    for rel, path, st, xattrs, whiteout in _walk(os.fspath(upper), ns):
        if ns + "metacopy" in xattrs or ns + "redirect" in xattrs:
            raise UnsupportedHostError(f"{path} has overlay metacopy or redirect xattrs: its data "
                                       "or name is in a lower layer",
                                       fix="mount the overlay with metacopy=off,redirect_dir=off")
        mode, info = st.st_mode, tarfile.TarInfo(rel)
        info.mtime, info.uname, info.gname = int(st.st_mtime), "", ""
        if whiteout:
            info.mode = 0
            add(info)
            continue
        info.mode, info.uid, info.gid = stat.S_IMODE(mode), st.st_uid, st.st_gid
        info.pax_headers = {_XATTR + k: v.decode("utf-8", "surrogateescape")
                            for k, v in sorted(xattrs.items())
                            if not k.startswith(_OVERLAY_XATTRS) and k != "security.selinux"}
        if stat.S_ISREG(mode) and st.st_nlink > 1 and (
                first := links.setdefault((st.st_dev, st.st_ino), rel)) != rel:
            info.type, info.linkname = tarfile.LNKTYPE, first
            add(info)
        elif stat.S_ISREG(mode):
            info.size = left = st.st_size
            add(info)
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                while left:
                    if not (chunk := os.read(fd, min(left, _CHUNK))):
                        raise InvalidArgumentError(f"{path} shrank while it was written to the layer")
                    emit(chunk)
                    left -= len(chunk)
            finally:
                os.close(fd)
            emit(bytes(-st.st_size % tarfile.BLOCKSIZE))
            content_size += st.st_size
        elif stat.S_ISDIR(mode):
            info.type = tarfile.DIRTYPE
            add(info)
            if xattrs.get(ns + "opaque") == b"y":
                marker = tarfile.TarInfo(f"{rel}/{WHITEOUT_OPAQUE}")
                marker.mode = 0
                add(marker)
        elif stat.S_ISLNK(mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
            add(info)
        elif stat.S_IFMT(mode) in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO):
            info.type = {v: k for k, v in _NODE_TYPES.items()}[stat.S_IFMT(mode)]
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            add(info)
        # sockets cannot go into a tar
    # the end-of-archive marker, padded to a whole record as tar and tarfile do
    emit(bytes(2 * tarfile.BLOCKSIZE + -(size + 2 * tarfile.BLOCKSIZE) % tarfile.RECORDSIZE))
    return LayerStats("sha256:" + sha.hexdigest(), size, entries, content_size)


# -- inspect ------------------------------------------------------------------------------------

def iter_layer(tar: str | os.PathLike[str] | BinaryIO, *,
               compression: str | None = None) -> Iterator[tuple[tarfile.TarInfo, str]]:
    """Yield ``(member, kind)`` for each entry of a layer, without extracting anything.

    ``kind`` is one of ``file dir symlink hardlink whiteout opaque device fifo``. Members are as
    stored, unfiltered, so a suspicious layer can be looked at before it is refused.

    Raises
    ------
    InvalidArgumentError
        The archive is truncated or corrupt.
    """
    with open_decompressed(tar, compression) as stream:
        try:
            for member in _TarStream(stream):
                base = member.name.rpartition("/")[2]
                yield member, ("opaque" if base == WHITEOUT_OPAQUE else
                               "whiteout" if base.startswith(WHITEOUT_PREFIX) else
                               _KINDS.get(member.type, "file"))
        except tarfile.TarError as err:
            raise _corrupt(err) from err
