"""Writing tars from layer directories, deterministically.

- :func:`write_layer`: an overlay upper dir -> an OCI layer tar; overlay whiteouts and opaque dirs
  back into ``.wh.`` entries, so the same upper dir always gives the same bytes and diff_id.
- :func:`write_flat_tar`: the merged view of a stack of layer dirs -> one tar without whiteouts
  (``export``, ``commit --squash``).

Both walk their tree depth first, sorted bytewise by name within each directory, and write every
entry through the one :class:`_TarWriter`, so both keep the same metadata: uid, gid, mode,
whole-second mtime, xattrs as ``SCHILY.xattr.*`` records, hardlinks.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tarfile
from collections.abc import Callable, Iterator
from typing import BinaryIO, NamedTuple

from nbcontainer.compression import CHUNK
from nbcontainer.errors import InvalidArgumentError, UnsupportedHostError
from nbcontainer.layers.overlayfs import (
    OVERLAY_XATTR_PREFIXES,
    WHITEOUT_OPAQUE,
    WHITEOUT_PREFIX,
    is_opaque,
    is_whiteout,
    xattr_prefix,
)
from nbcontainer.layers.tario import NODE_TYPES, XATTR_PAX_PREFIX, LayerStats

__all__ = ["write_flat_tar", "write_layer"]

_TAR_TYPES = {v: k for k, v in NODE_TYPES.items()}


class _TarWriter:
    """Writes PAX entries for file system entries to ``out``, hashing and counting as it goes.

    Entries carry empty user/group names and no atime/ctime, so the same tree gives the same bytes.
    Overlay-private xattrs and the host's ``security.selinux`` label are dropped; the other xattrs
    (``security.capability``, ``user.*`` …) become ``SCHILY.xattr.*`` records. Files sharing an
    inode become hardlinks to the first of them.
    """

    def __init__(self, out: BinaryIO) -> None:
        self._out, self._sha = out, hashlib.sha256()
        self.size = self.entries = self.content_size = 0
        self._links: dict[tuple[int, int], str] = {}

    def _emit(self, data: bytes | memoryview) -> None:
        self._sha.update(data)
        self._out.write(data)
        self.size += len(data)

    def _add(self, info: tarfile.TarInfo) -> None:
        self._emit(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))  # not the locale's
        self.entries += 1

    def marker(self, name: str, mtime: int = 0) -> None:
        """A ``.wh.`` entry: an empty file, mode 0, owned by root."""
        info = tarfile.TarInfo(name)
        info.mode, info.mtime = 0, mtime
        self._add(info)

    def entry(self, rel: str, path: str, st: os.stat_result, xattrs: dict[str, bytes]) -> None:
        """The entry ``rel`` for the file ``path`` (not followed); sockets are skipped."""
        mode, info = st.st_mode, tarfile.TarInfo(rel)
        info.mtime, info.uname, info.gname = int(st.st_mtime), "", ""
        info.mode, info.uid, info.gid = stat.S_IMODE(mode), st.st_uid, st.st_gid
        info.pax_headers = {XATTR_PAX_PREFIX + k: v.decode("utf-8", "surrogateescape")
                            for k, v in sorted(xattrs.items())
                            if not k.startswith(OVERLAY_XATTR_PREFIXES) and k != "security.selinux"}
        if stat.S_ISREG(mode) and st.st_nlink > 1 and (
                first := self._links.setdefault((st.st_dev, st.st_ino), rel)) != rel:
            info.type, info.linkname = tarfile.LNKTYPE, first
            self._add(info)
        elif stat.S_ISREG(mode):
            info.size = left = st.st_size
            self._add(info)
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                while left:
                    if not (chunk := os.read(fd, min(left, CHUNK))):
                        raise InvalidArgumentError(f"{path} shrank while it was written to the layer")
                    self._emit(chunk)
                    left -= len(chunk)
            finally:
                os.close(fd)
            self._emit(bytes(-st.st_size % tarfile.BLOCKSIZE))
            self.content_size += st.st_size
        elif stat.S_ISDIR(mode):
            info.type = tarfile.DIRTYPE
            self._add(info)
        elif stat.S_ISLNK(mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
            self._add(info)
        elif stat.S_IFMT(mode) in _TAR_TYPES:
            info.type = _TAR_TYPES[stat.S_IFMT(mode)]
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            self._add(info)
        # sockets cannot go into a tar

    def finish(self) -> LayerStats:
        # the end-of-archive marker, padded to a whole record as tar and tarfile do
        self._emit(bytes(2 * tarfile.BLOCKSIZE + -(self.size + 2 * tarfile.BLOCKSIZE) % tarfile.RECORDSIZE))
        return LayerStats("sha256:" + self._sha.hexdigest(), self.size, self.entries, self.content_size)


class _Child(NamedTuple):
    name: str  # as in the tar
    path: str
    st: os.stat_result
    xattrs: dict[str, bytes]
    whiteout: bool
    below: list[str]  # a dir: the dirs whose entries it shows, top first; else empty


def _xattrs(path: str) -> dict[str, bytes]:
    try:
        return {n: os.getxattr(path, n, follow_symlinks=False)
                for n in os.listxattr(path, follow_symlinks=False)}
    except OSError as err:
        if err.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}
        raise


def _walk(children: Callable[[list[str]], list[_Child]], top: list[str]) -> Iterator[tuple[str, _Child]]:
    """``(name relative to the top, child)`` for the whole tree, depth first; no symlinks followed."""
    stack = [("", iter(children(top)))]
    while stack:
        prefix, level = stack[-1]
        if (child := next(level, None)) is None:
            stack.pop()
            continue
        yield prefix + child.name, child
        if child.below:
            stack.append((f"{prefix}{child.name}/", iter(children(child.below))))


def _sorted(children: list[_Child]) -> list[_Child]:
    children.sort(key=lambda child: os.fsencode(child.name))
    return children


# -- one upper dir, whiteouts kept --------------------------------------------------------------

def _upper_children(dirs: list[str], userxattr: bool) -> list[_Child]:
    """The entries of one dir of an upper dir, a whiteout named ``.wh.NAME``."""
    out = []
    with os.scandir(dirs[0]) as it:
        for entry in it:
            if entry.name.startswith(WHITEOUT_PREFIX):
                raise InvalidArgumentError(f"{entry.path}: names starting with '.wh.' are reserved "
                                           "for whiteouts and cannot go into a layer")
            st = entry.stat(follow_symlinks=False)
            xattrs = _xattrs(entry.path)
            whiteout = is_whiteout(st, xattrs, userxattr=userxattr)
            out.append(_Child(WHITEOUT_PREFIX * whiteout + entry.name, entry.path, st, xattrs, whiteout,
                              [entry.path] if stat.S_ISDIR(st.st_mode) else []))
    return _sorted(out)


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
    ns = xattr_prefix(userxattr)
    writer = _TarWriter(out)
    for rel, child in _walk(lambda dirs: _upper_children(dirs, userxattr), [os.fspath(upper)]):
        if ns + "metacopy" in child.xattrs or ns + "redirect" in child.xattrs:
            raise UnsupportedHostError(f"{child.path} has overlay metacopy or redirect xattrs: its data "
                                       "or name is in a lower layer",
                                       fix="mount the overlay with metacopy=off,redirect_dir=off")
        if child.whiteout:
            writer.marker(rel, int(child.st.st_mtime))
            continue
        writer.entry(rel, child.path, child.st, child.xattrs)
        if child.below and is_opaque(child.path, child.xattrs, userxattr=userxattr):
            writer.marker(f"{rel}/{WHITEOUT_OPAQUE}")
    return writer.finish()


# -- a stack of layer dirs, merged ----------------------------------------------------------------

def _merged_children(dirs: list[str]) -> list[_Child]:
    """The entries of a merged dir whose copies are ``dirs`` (top first), as overlay shows them.

    The topmost copy of a name wins and a whiteout hides it. A dir shows the entries of its copies
    from the top down to the first opaque one or the first copy that is not a dir (a whiteout or a
    file there was deleted or replaced: nothing below it comes back).
    """
    found: dict[str, list[tuple[str, os.stat_result]]] = {}
    for d in dirs:
        try:
            it = os.scandir(d)
        except FileNotFoundError:
            continue
        with it:
            for entry in it:
                found.setdefault(entry.name, []).append((entry.path, entry.stat(follow_symlinks=False)))
    out = []
    for name, copies in found.items():
        path, st = copies[0]
        xattrs = _xattrs(path)
        if is_whiteout(st, xattrs):
            continue
        below = []
        if stat.S_ISDIR(st.st_mode):
            for copy_path, copy_st in copies:
                if not stat.S_ISDIR(copy_st.st_mode):
                    break  # a whiteout or a file in a middle layer hides every copy below it
                below.append(copy_path)
                if is_opaque(copy_path, xattrs if copy_path == path else None):
                    break
        out.append(_Child(name, path, st, xattrs, False, below))
    return _sorted(out)


def write_flat_tar(dirs_top_first: list[str], out: BinaryIO) -> int:
    """Write the merged view of a stack of layer dirs to ``out`` as one tar without whiteouts.

    What ``docker export`` gives, and the one layer of ``commit --squash``: every visible entry
    with its metadata and xattrs, as :func:`write_layer` writes them; no ``.wh.`` entries.

    Parameters
    ----------
    dirs_top_first
        Overlay layer dirs (``diff`` dirs, a container's upper dir first).
    out
        Writable binary stream; receives the uncompressed tar and is left open.

    Returns
    -------
    int
        The number of entries written.
    """
    writer = _TarWriter(out)
    for rel, child in _walk(_merged_children, [os.fspath(d) for d in dirs_top_first]):
        writer.entry(rel, child.path, child.st, child.xattrs)
    return writer.finish().entries
