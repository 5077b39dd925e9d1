"""The layer filter: which tar members may be written under a destination, and as what.

Like tarfile's extraction filters, a small check per member, in two halves: :func:`check_member`
needs no file system (names, member types, whiteout names, overlay-private xattrs) and
:func:`check_parents` looks at what already exists under the destination (never write through a
symlink). :func:`layer_filter` is both, for one member; the extractor of :mod:`.apply` calls the
halves itself so that it lstats each directory once per layer rather than once per member.
"""

from __future__ import annotations

import copy
import os
import stat
import tarfile
from collections.abc import Mapping

from nbcontainer.errors import InvalidArgumentError, UnsafeArchiveError
from nbcontainer.layers.overlayfs import OVERLAY_XATTR_PREFIXES, WHITEOUT_OPAQUE, WHITEOUT_PREFIX
from nbcontainer.layers.tario import KINDS, XATTR_PAX_PREFIX

__all__ = ["check_member", "check_parents", "layer_filter"]


# Longer names cannot be created (PATH_MAX) and deeper trees overflow recursive clean-up (rmtree).
MAX_NAME = 4096
MAX_DEPTH = 256


def _normalise(name: str, member: str, what: str) -> str:
    if len(name) > MAX_NAME or name.count("/") > MAX_DEPTH:
        short = member if len(member) <= 200 else member[:200] + "..."
        raise UnsafeArchiveError(short, f"{what} is longer than {MAX_NAME} characters or deeper than "
                                        f"{MAX_DEPTH} directories")
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


def _is_overlay_xattr(key: str) -> bool:
    return key.startswith(XATTR_PAX_PREFIX) and key[len(XATTR_PAX_PREFIX):].startswith(OVERLAY_XATTR_PREFIXES)


def check_member(member: tarfile.TarInfo) -> tuple[str, str, str, Mapping[str, str]]:
    """The half of the filter that needs no file system.

    Returns
    -------
    tuple
        ``(name, kind, linkname, pax_headers)``: the normalised name (``""`` for the archive root),
        the kind (``file dir symlink hardlink device fifo whiteout opaque``), the normalised
        hardlink target and the PAX records without overlay-private xattrs.

    Raises
    ------
    UnsafeArchiveError
        See :func:`layer_filter`.
    """
    name = member.name
    rel = _normalise(name, name, "name")
    if (kind := KINDS.get(member.type)) is None:
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
    if pax and any(_is_overlay_xattr(k) for k in pax):
        # overlay-private xattrs (redirect, metacopy, origin...) would steer the mount
        pax = {k: v for k, v in pax.items() if not _is_overlay_xattr(k)}
    return rel, kind, linkname, pax


def check_parents(root: str, rel: str, member: str, known: set[str], *, create: bool) -> None:
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
    rel, kind, linkname, pax = check_member(member)
    root, known = os.path.realpath(dest), {""}
    check_parents(root, rel.rpartition("/")[0], member.name, known, create=False)
    if kind == "hardlink":
        check_parents(root, linkname.rpartition("/")[0], member.name, known, create=False)
    if (rel or ".", linkname, pax) == (member.name, member.linkname, member.pax_headers):
        return member
    clean = copy.copy(member)
    clean.name, clean.linkname, clean.pax_headers = rel or ".", linkname, pax
    return clean
