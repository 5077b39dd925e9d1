"""The union of layer directories, computed without mounting: which layer provides each path,
which copies it shadows, which whiteouts and opaque dirs hide what. Used by ``files()`` and the
UnionMountView widget (``export`` and ``commit --squash`` write the merged view with
:func:`nbcontainer.layers.write_flat_tar`).

Layers are given bottom first, as overlay ``diff`` dirs (whiteouts are char devices 0/0, opaque
dirs carry the ``trusted.overlay.opaque`` or ``user.overlay.opaque`` xattr).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from nbcontainer.layers.overlayfs import is_opaque, is_whiteout


@dataclass
class Entry:
    path: str  # absolute, as seen in the container: "/etc/passwd"
    layer: int  # index, bottom first
    size: int
    mode: int
    uid: int
    gid: int
    mtime: float
    type: str  # file, dir, symlink, whiteout, char, block, fifo, socket
    kind: str = "added"  # added | modified | whiteout (relative to the layers below)
    opaque: bool = False
    shadowed_by: int = -1  # the higher layer that hides or replaces this copy, -1 if none
    linkname: str = ""
    nlink: int = 1
    inode: int = 0

    @property
    def visible(self) -> bool:
        return self.shadowed_by < 0 and self.type != "whiteout"


_TYPES = ((stat.S_ISREG, "file"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "symlink"), (stat.S_ISCHR, "char"),
          (stat.S_ISBLK, "block"), (stat.S_ISFIFO, "fifo"))


def _type(st: os.stat_result) -> str:
    if is_whiteout(st):
        return "whiteout"
    return next((name for test, name in _TYPES if test(st.st_mode)), "socket")


def scan_layer(root: str, index: int) -> list[Entry]:
    """Every entry of one layer dir, parents before children."""
    out: list[Entry] = []
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        base = os.path.join(root, rel_dir) if rel_dir else root
        try:
            it = sorted(os.scandir(base), key=lambda e: e.name)
        except FileNotFoundError:
            continue
        subdirs = []
        for de in it:
            st = de.stat(follow_symlinks=False)
            rel = f"{rel_dir}/{de.name}" if rel_dir else de.name
            t = _type(st)
            e = Entry("/" + rel, index, st.st_size if t == "file" else 0, stat.S_IMODE(st.st_mode), st.st_uid,
                      st.st_gid, st.st_mtime, t, nlink=st.st_nlink, inode=st.st_ino)
            if t == "dir":
                e.opaque = is_opaque(de.path)
                subdirs.append(rel)
            elif t == "symlink":
                e.linkname = os.readlink(de.path)
            out.append(e)
        stack.extend(reversed(subdirs))
    return out


def _ancestors(path: str) -> Iterator[str]:
    p = os.path.dirname(path)
    while p != "/":
        yield p
        p = os.path.dirname(p)


def union(dirs: list[str]) -> list[list[Entry]]:
    """Entries of each layer (bottom first) with ``kind`` and ``shadowed_by`` filled in."""
    layers = [scan_layer(d, i) for i, d in enumerate(dirs)]
    # Top-down pass: what the layers above have made of each path.
    hide_below: dict[str, int] = {}  # path whose descendants are hidden below: whiteout, opaque, non-dir
    top: dict[str, Entry] = {}  # the highest copy seen so far of each path
    for i in range(len(layers) - 1, -1, -1):
        for e in layers[i]:
            hider = next((hide_below[a] for a in _ancestors(e.path) if a in hide_below), -1)
            if hider >= 0:
                e.shadowed_by = hider
                continue
            above = top.get(e.path)
            if above is not None and not (above.type == "dir" and e.type == "dir" and not above.opaque):
                e.shadowed_by = above.layer
            elif above is not None:
                e.shadowed_by = above.layer  # a merged dir: the upper copy's metadata wins
        for e in layers[i]:
            if e.type != "dir" or e.opaque:
                # a whiteout, a file or an opaque dir hides what is below it, shadowed itself or not
                hide_below.setdefault(e.path, i)
            if e.shadowed_by >= 0 and e.type != "dir":
                continue
            if e.path not in top:
                top[e.path] = e
    # Bottom-up pass: added or modified relative to what the layers below provide.
    below: set[str] = set()
    gone: set[str] = set()
    for entries in layers:
        for e in entries:
            if e.type == "whiteout":
                e.kind = "whiteout"
            elif e.path in below:
                e.kind = "modified"
            else:
                e.kind = "added"
        for e in entries:
            if e.type == "whiteout":
                below.discard(e.path)
                gone.add(e.path)
                prefix = e.path + "/"
                below.difference_update({p for p in below if p.startswith(prefix)})
            else:
                if e.opaque:
                    prefix = e.path + "/"
                    below.difference_update({p for p in below if p.startswith(prefix)})
                below.add(e.path)
    return layers


def merged(dirs: list[str]) -> dict[str, Entry]:
    """The merged view: path → the entry that provides it (for a dir, its topmost copy)."""
    return {e.path: e for entries in union(dirs) for e in entries if e.visible}

