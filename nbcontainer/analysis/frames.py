"""Results → pandas DataFrames with typed columns (sizes as int64 bytes, tz-aware datetimes).

Pure functions: no I/O beyond what a result already carries, no display.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from nbcontainer.oci import Index

if TYPE_CHECKING:
    from nbcontainer.oci import Platform
    from nbcontainer.transfer.registry.client import RemoteManifest

BUILDERS: dict[str, Callable[[Any], pd.DataFrame]] = {}


def builder(name: str) -> Callable[[Callable[[Any], pd.DataFrame]], Callable[[Any], pd.DataFrame]]:
    def deco(fn: Callable[[Any], pd.DataFrame]) -> Callable[[Any], pd.DataFrame]:
        BUILDERS[name] = fn
        return fn

    return deco


def to_frame(kind: str, value: Any) -> pd.DataFrame:
    if kind in BUILDERS:
        return BUILDERS[kind](value)
    return generic(value)


def _times(series: pd.Series) -> pd.Series:
    return pd.to_datetime(series, utc=True)


def generic(value: Any) -> pd.DataFrame:
    rows = value if isinstance(value, list) else [value]
    return pd.DataFrame([asdict(r) if is_dataclass(r) and not isinstance(r, type) else r for r in rows])


@builder("images")
def images(rows: list) -> pd.DataFrame:
    df = pd.DataFrame(
        [{"repository": r.repository, "tag": r.tag, "image_id": str(r.id), "created": r.created,
          "size": r.size} for r in rows],
        columns=["repository", "tag", "image_id", "created", "size"],
    )
    df["created"] = _times(df["created"])
    df["size"] = df["size"].astype("int64")
    return df


@builder("history")
def history(rows: list) -> pd.DataFrame:
    df = pd.DataFrame(
        [{"image": r.id, "created": r.created, "created_by": r.created_by, "size": r.size,
          "comment": r.comment, "empty_layer": r.empty_layer, "diff_id": r.diff_id} for r in rows],
        columns=["image", "created", "created_by", "size", "comment", "empty_layer", "diff_id"],
    )
    df["created"] = _times(df["created"])
    df["size"] = df["size"].astype("int64")
    return df


@builder("layers")
def layers(rows: list) -> pd.DataFrame:
    df = pd.DataFrame(
        [{"index": r.index, "digest": str(r.digest), "diff_id": str(r.diff_id), "chain_id": str(r.chain_id),
          "size": r.size, "files": r.files, "created_by": r.created_by, "path": r.path,
          "media_type": r.media_type} for r in rows],
        columns=["index", "digest", "diff_id", "chain_id", "size", "files", "created_by", "path",
                 "media_type"],
    )
    return df.astype({"index": "int64", "size": "int64", "files": "int64"})


@builder("df")
def disk_usage(rows: list) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"])
    df.columns = [c.lower() for c in df.columns]
    return df.astype({"total": "int64", "active": "int64", "size": "int64", "reclaimable": "int64"})


@builder("ps")
def containers(rows: list) -> pd.DataFrame:
    df = pd.DataFrame(
        [{"container_id": r.id, "image": r.image, "command": r.command, "created": r.created,
          "status": r.status, "state": r.state, "name": r.name, "pid": r.pid, "exit_code": r.exit_code}
         for r in rows],
        columns=["container_id", "image", "command", "created", "status", "state", "name", "pid",
                 "exit_code"],
    )
    df["created"] = _times(df["created"])
    return df.astype({"pid": "int64", "exit_code": "int64"})


@builder("top")
def top(rows: list) -> pd.DataFrame:
    cols = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    df = pd.DataFrame(rows, columns=cols)
    return df.astype({"PID": "int64", "PPID": "int64"})


@builder("diff")
def diff(rows: list) -> pd.DataFrame:
    df = pd.DataFrame(
        [{"kind": r.kind, "path": r.path, "size": r.size, "whiteout": r.whiteout, "opaque": r.opaque}
         for r in rows],
        columns=["kind", "path", "size", "whiteout", "opaque"],
    )
    return df.astype({"size": "int64", "whiteout": "bool", "opaque": "bool"})


FILE_COLUMNS = ["path", "layer", "size", "mode", "uid", "gid", "type", "kind", "shadowed", "shadowed_by",
                "visible"]


@builder("files")
def files(layers: list) -> pd.DataFrame:
    """Every entry of every layer (the output of :func:`nbcontainer.analysis.union.union`)."""
    records = [
        (e.path, e.layer, e.size, e.mode, e.uid, e.gid, e.type, e.kind, e.shadowed_by >= 0, e.shadowed_by,
         e.visible)
        for entries in layers for e in entries
    ]
    df = pd.DataFrame.from_records(records, columns=FILE_COLUMNS)
    return df.astype({"layer": "int64", "size": "int64", "mode": "int64", "uid": "int64", "gid": "int64",
                      "shadowed_by": "int64", "shadowed": "bool", "visible": "bool"})


def wasted(files_df: pd.DataFrame) -> pd.DataFrame:
    """Copies of files that a later layer overwrites or deletes: bytes shipped but never seen.

    Each shadowed copy counts once, in the layer that holds it (dive's "wasted space").
    """
    w = files_df[(files_df["type"] == "file") & files_df["shadowed"]]
    return w.sort_values("size", ascending=False).reset_index(drop=True)


def efficiency(files_df: pd.DataFrame) -> float:
    """1 - wasted bytes / all file bytes across layers (dive's image efficiency score)."""
    total = int(files_df.loc[files_df["type"] == "file", "size"].sum())
    if total == 0:
        return 1.0
    return 1.0 - int(wasted(files_df)["size"].sum()) / total


@builder("networks")
def networks(rows: list) -> pd.DataFrame:
    """``network ls``: one row per network, with how many containers have an address on it."""
    cols = ["network_id", "name", "driver", "bridge", "subnet", "gateway", "containers", "created"]
    df = pd.DataFrame(
        [{"network_id": r.id, "name": r.name, "driver": r.driver, "bridge": r.bridge, "subnet": r.subnet,
          "gateway": r.gateway, "containers": r.containers, "created": r.created} for r in rows],
        columns=cols,
    )
    df["created"] = _times(df["created"])
    return df.astype({"containers": "int64"})


@builder("addresses")
def addresses(rows: list) -> pd.DataFrame:
    """Each running container's address: network, IP/prefix, gateway, MAC, host veth, ports."""
    cols = ["container_id", "name", "network", "ip_address", "prefix_len", "gateway", "mac_address", "veth",
            "ports"]
    df = pd.DataFrame(
        [{"container_id": r.container, "name": r.name, "network": r.network, "ip_address": r.ip_address,
          "prefix_len": r.prefix_len, "gateway": r.gateway, "mac_address": r.mac_address, "veth": r.veth,
          "ports": r.ports} for r in rows],
        columns=cols,
    )
    return df.astype({"prefix_len": "int64"})


# -- registry -------------------------------------------------------------------------------

INDEX_COLUMNS = ["platform", "os", "architecture", "variant", "media_type", "digest", "size"]
MANIFEST_COLUMNS = ["layer", "media_type", "digest", "size"]


@builder("manifest")
def manifest(remote: RemoteManifest) -> pd.DataFrame:
    """An index: one row per platform (its manifest's descriptor). A manifest: one row per layer,
    bottom first, with the compressed size the registry stores."""
    body = remote.manifest
    if isinstance(body, Index):  # remote.is_index, spelled so that the type narrows
        platforms = [(*_platform_cells(m.platform), m.media_type, str(m.digest), m.size)
                     for m in body.manifests]
        return pd.DataFrame.from_records(platforms, columns=INDEX_COLUMNS).astype({"size": "int64"})
    layers = [(i, layer.media_type, str(layer.digest), layer.size) for i, layer in enumerate(body.layers)]
    return pd.DataFrame.from_records(layers, columns=MANIFEST_COLUMNS).astype(
        {"layer": "int64", "size": "int64"})


def _platform_cells(p: Platform | None) -> tuple[str, str, str, str]:
    return (str(p), p.os, p.architecture, p.variant) if p else ("", "", "", "")
