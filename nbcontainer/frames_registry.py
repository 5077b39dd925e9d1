"""Registry results → DataFrames: ``manifest`` (a remote manifest or index, as ``manifest-inspect`` shows it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from .frames import builder

if TYPE_CHECKING:
    from .oci import Platform
    from .store.registry import RemoteManifest

INDEX_COLUMNS = ["platform", "os", "architecture", "variant", "media_type", "digest", "size"]
MANIFEST_COLUMNS = ["layer", "media_type", "digest", "size"]


@builder("manifest")
def manifest(remote: RemoteManifest) -> pd.DataFrame:
    """An index: one row per platform (its manifest's descriptor). A manifest: one row per layer,
    bottom first, with the compressed size the registry stores."""
    if remote.is_index:
        records = [(*_platform_cells(m.platform), m.media_type, str(m.digest), m.size)
                   for m in remote.manifest.manifests]  # type: ignore[union-attr]
        return pd.DataFrame.from_records(records, columns=INDEX_COLUMNS).astype({"size": "int64"})
    records = [(i, layer.media_type, str(layer.digest), layer.size)
               for i, layer in enumerate(remote.manifest.layers)]  # type: ignore[union-attr]
    return pd.DataFrame.from_records(records, columns=MANIFEST_COLUMNS).astype({"layer": "int64", "size": "int64"})


def _platform_cells(p: Platform | None) -> tuple[str, str, str, str]:
    return (str(p), p.os, p.architecture, p.variant) if p else ("", "", "", "")
