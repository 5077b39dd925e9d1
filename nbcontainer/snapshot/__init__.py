"""Unpacked image layers and container layers on disk, in Docker's overlay2 layout.

The snapshotter unpacks each layer once, keyed by chain id, and hands out *descriptions* of
overlay mounts (:class:`Mount`); a helper process mounts them, never the Jupyter kernel.
"""

from nbcontainer.snapshot.overlay import (
    MAX_MOUNT_OPTIONS,
    ContainerLayer,
    LayerInfo,
    Mount,
    Snapshotter,
)

__all__ = ["MAX_MOUNT_OPTIONS", "ContainerLayer", "LayerInfo", "Mount", "Snapshotter"]
