"""What a container changed: ``docker diff`` read from an overlay upper dir.

The upper dir holds exactly the changes, so only it is walked; the lower dirs are only looked up
(does this path exist below?), never walked, except below an opaque dir that replaced one.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from nbcontainer.layers.overlayfs import is_opaque, is_whiteout

__all__ = ["DiffRow", "upper_changes"]


@dataclass(frozen=True)
class DiffRow:
    """One line of ``docker diff``: kind is A (added), C (changed) or D (deleted)."""

    kind: str
    path: str
    size: int = 0
    whiteout: bool = False
    opaque: bool = False


def upper_changes(upper: str, lowers: list[str]) -> list[DiffRow]:
    """Docker's overlay diff, from the upper dir only (lowers are looked up, never walked).

    Parameters
    ----------
    upper
        The container's upper dir.
    lowers
        The image's layer dirs, in any order.

    Returns
    -------
    list of DiffRow
        Sorted by path; the parents of a change are listed as changed (C) or added (A) too.
    """
    rows: dict[str, DiffRow] = {}

    def in_lower(rel: str) -> bool:
        return any(_lower_entry(lo, rel) is not None for lo in lowers)

    def mark_parents(rel: str) -> None:
        parent = os.path.dirname(rel)
        while parent:
            p = "/" + parent
            if p not in rows:
                rows[p] = DiffRow("C" if in_lower(parent) else "A", p)
            parent = os.path.dirname(parent)

    for dirpath, dirs, files in os.walk(upper):
        rel_dir = os.path.relpath(dirpath, upper)
        rel_dir = "" if rel_dir == "." else rel_dir
        for name in sorted(dirs + files):
            full = os.path.join(dirpath, name)
            rel = os.path.join(rel_dir, name)
            st = os.lstat(full)
            if is_whiteout(st):
                rows["/" + rel] = DiffRow("D", "/" + rel, 0, whiteout=True)
            elif stat.S_ISDIR(st.st_mode):
                opaque = is_opaque(full)
                existed = in_lower(rel)
                rows["/" + rel] = DiffRow("C" if existed else "A", "/" + rel, 0, opaque=opaque)
                if opaque and existed:
                    for lo in lowers:
                        entry = _lower_entry(lo, rel)
                        if entry is not None and stat.S_ISDIR(entry.st_mode):
                            for child in os.listdir(os.path.join(lo, rel)):
                                p = "/" + os.path.join(rel, child)
                                if not os.path.lexists(os.path.join(full, child)) and p not in rows:
                                    rows[p] = DiffRow("D", p)
            else:
                rows["/" + rel] = DiffRow("C" if in_lower(rel) else "A", "/" + rel,
                                          st.st_size if stat.S_ISREG(st.st_mode) else 0)
            mark_parents(rel)
    return [rows[k] for k in sorted(rows)]


def _lower_entry(lower: str, rel: str) -> os.stat_result | None:
    """``lstat`` of ``rel`` inside one layer dir, or None — never through a symlink of the layer.

    ``os.path.lexists(lower + "/a/b")`` follows a symlink ``a`` and can land on the host (an
    image's ``a -> /etc`` would reveal whether the host has ``/etc/b``); overlayfs never merges
    through a symlink either, so a path below one does not exist in that layer.
    """
    path = lower
    parts = [p for p in rel.split("/") if p]
    for i, part in enumerate(parts):
        path = os.path.join(path, part)
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if i < len(parts) - 1 and not stat.S_ISDIR(st.st_mode):
            return None
    return os.lstat(lower) if not parts else st
