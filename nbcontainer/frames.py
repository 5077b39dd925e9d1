"""Results → pandas DataFrames with typed columns (sizes as int64 bytes, tz-aware datetimes).

Pure functions: no I/O beyond what a result already carries, no display.
"""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from typing import Any, Callable

import pandas as pd

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
    return pd.DataFrame([asdict(r) if is_dataclass(r) else r for r in rows])


@builder("images")
def images(rows: list) -> pd.DataFrame:
    df = pd.DataFrame(
        [{"repository": r.repository, "tag": r.tag, "image_id": str(r.id), "created": r.created, "size": r.size}
         for r in rows],
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
        columns=["index", "digest", "diff_id", "chain_id", "size", "files", "created_by", "path", "media_type"],
    )
    return df.astype({"index": "int64", "size": "int64", "files": "int64"})


@builder("df")
def disk_usage(rows: list) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"])
    df.columns = [c.lower() for c in df.columns]
    return df.astype({"total": "int64", "active": "int64", "size": "int64", "reclaimable": "int64"})
