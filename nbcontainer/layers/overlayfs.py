"""The overlayfs vocabulary, written once: how deletions and opaque directories are spelled.

In an OCI layer tar, ``.wh.NAME`` removes NAME from the layers below and ``DIR/.wh..wh..opq`` makes
DIR *opaque* (hides what is below it). In an overlay layer directory the same two things are a 0/0
character device (or, where mknod is refused, an empty file with the ``overlay.whiteout`` xattr:
Linux 6.7+) and the ``overlay.opaque=y`` xattr. overlayfs reads its xattrs as ``trusted.overlay.*``,
or as ``user.overlay.*`` when mounted with ``userxattr`` (rootless).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping

__all__ = [
    "OVERLAY_XATTR_PREFIXES",
    "TRUSTED_PREFIX",
    "USER_PREFIX",
    "WHITEOUT_OPAQUE",
    "WHITEOUT_PREFIX",
    "is_opaque",
    "is_whiteout",
    "make_whiteout",
    "xattr_prefix",
]

WHITEOUT_PREFIX = ".wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"

TRUSTED_PREFIX = "trusted.overlay."
USER_PREFIX = "user.overlay."
OVERLAY_XATTR_PREFIXES = (TRUSTED_PREFIX, USER_PREFIX)


def xattr_prefix(userxattr: bool) -> str:
    """``user.overlay.`` for an overlay mounted with ``userxattr``, else ``trusted.overlay.``."""
    return USER_PREFIX if userxattr else TRUSTED_PREFIX


def _prefixes(userxattr: bool | None) -> tuple[str, ...]:
    return OVERLAY_XATTR_PREFIXES if userxattr is None else (xattr_prefix(userxattr),)


def make_whiteout(path: str) -> None:
    """Make ``path`` a whiteout the way overlayfs does: a 0/0 character device (needs CAP_MKNOD)."""
    os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))


def is_whiteout(st: os.stat_result, xattrs: Mapping[str, bytes] | None = None, *,
                userxattr: bool | None = None) -> bool:
    """Whether a layer dir entry is a whiteout: a 0/0 character device, or, when its ``xattrs``
    are given, an empty regular file with ``overlay.whiteout`` (in the ``userxattr`` namespace;
    ``None``: either)."""
    if stat.S_ISCHR(st.st_mode):
        return st.st_rdev == 0
    return (xattrs is not None and stat.S_ISREG(st.st_mode) and st.st_size == 0
            and any(prefix + "whiteout" in xattrs for prefix in _prefixes(userxattr)))


def is_opaque(path: str, xattrs: Mapping[str, bytes] | None = None, *, userxattr: bool | None = None) -> bool:
    """Whether the directory ``path`` is opaque: ``overlay.opaque`` is ``y`` (in the ``userxattr``
    namespace; ``None``: either). Reads the xattrs of ``path`` unless they are given."""
    for prefix in _prefixes(userxattr):
        if xattrs is not None:
            value = xattrs.get(prefix + "opaque")
        else:
            try:
                value = os.getxattr(path, prefix + "opaque", follow_symlinks=False)
            except OSError:
                continue
        if value == b"y":
            return True
    return False
