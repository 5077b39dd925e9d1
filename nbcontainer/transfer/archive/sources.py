"""Image archives: ``save`` images to a tar, ``load`` them from one (``docker save`` / ``docker load``).

The formats, all plain OCI or Docker, nothing private:

- ``docker+oci`` (what :func:`save` writes by default, as Docker 25+ does): an OCI image layout in a
  tar whose ``manifest.json`` and ``repositories`` also make it a docker-archive.
- ``docker-archive``: ``manifest.json`` (``Config``, ``RepoTags``, ``Layers``) over the blobs.
- ``oci-archive``: the OCI image layout alone; ``index.json`` names each manifest with
  ``org.opencontainers.image.ref.name`` (the tag) and ``io.containerd.image.name`` (the full name).

:func:`load` reads those, legacy ``docker save`` archives, OCI layout directories, compressed tars
and compressed layers; see :mod:`.load` and :mod:`.save`.
"""

from __future__ import annotations

from nbcontainer.oci import Reference
from nbcontainer.transfer.archive.load import LoadedImage, load
from nbcontainer.transfer.archive.save import COMPRESSIONS, FORMATS, save

__all__ = [
    "COMPRESSIONS",
    "FORMATS",
    "LoadedImage",
    "format_loaded",
    "load",
    "save",
]


def format_loaded(loaded: list[LoadedImage]) -> list[str]:
    """The lines ``docker load`` prints.

    ``Loaded image: busybox:latest`` for each name, or ``Loaded image ID: sha256:…`` for an image
    without one.
    """
    lines: list[str] = []
    for item in loaded:
        if item.names:
            lines.extend(f"Loaded image: {Reference.parse(n).familiar}" for n in item.names)
        else:
            lines.append(f"Loaded image ID: {item.image.id}")
    return lines
