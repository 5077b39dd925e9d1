"""The layer codec: OCI layer tars to and from overlay directories.

A *layer* is a tar of file system changes; its *diff_id* is the sha256 of the uncompressed tar.
Deletions travel as whiteouts (see :mod:`.overlayfs`). The rooms:

- :mod:`.tario`: a layer blob opened as its tar stream, the fast tar reader, :func:`iter_layer`.
- :mod:`.filter`: :func:`layer_filter`, which members may be written under a destination.
- :mod:`.overlayfs`: the whiteout and opaque vocabulary, and the overlay xattr names.
- :mod:`.apply`: :func:`apply_layer`, tar -> layer dir.
- :mod:`.write`: :func:`write_layer`, upper dir -> tar; :func:`write_flat_tar`, merged layers -> tar.
- :mod:`.diff`: :func:`upper_changes`, ``docker diff`` of an upper dir.

Decompression is :mod:`nbcontainer.compression`'s; :func:`open_decompressed` here is its layer form.
The names below load their module on first use, so ``docker diff`` does not import the tar codec.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nbcontainer.layers.apply import apply_layer
    from nbcontainer.layers.diff import DiffRow, upper_changes
    from nbcontainer.layers.filter import layer_filter
    from nbcontainer.layers.overlayfs import WHITEOUT_OPAQUE, WHITEOUT_PREFIX, is_opaque, is_whiteout
    from nbcontainer.layers.tario import LayerStats, iter_layer, open_decompressed
    from nbcontainer.layers.write import write_flat_tar, write_layer

__all__ = [
    "WHITEOUT_OPAQUE",
    "WHITEOUT_PREFIX",
    "DiffRow",
    "LayerStats",
    "apply_layer",
    "is_opaque",
    "is_whiteout",
    "iter_layer",
    "layer_filter",
    "open_decompressed",
    "upper_changes",
    "write_flat_tar",
    "write_layer",
]

_HOME = {
    "apply_layer": "apply",
    "DiffRow": "diff", "upper_changes": "diff",
    "layer_filter": "filter",
    "WHITEOUT_OPAQUE": "overlayfs", "WHITEOUT_PREFIX": "overlayfs", "is_opaque": "overlayfs",
    "is_whiteout": "overlayfs",
    "LayerStats": "tario", "iter_layer": "tario", "open_decompressed": "tario",
    "write_flat_tar": "write", "write_layer": "write",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
