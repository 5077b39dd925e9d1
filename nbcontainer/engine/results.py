"""The typed rows the Engine returns (one dataclass per table verb) and the time helpers they use.

The faces turn them into text (``cli/``) or DataFrames (``analysis.frames``); nothing here formats.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field

from nbcontainer.oci import MT_OCI_LAYER
from nbcontainer.store import Image

__all__ = ["HistoryRow", "ImageRow", "LayerRow", "RemoveResult", "parse_time", "utcnow"]


def utcnow() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat().replace("+00:00", "Z")


def parse_time(text: str) -> _dt.datetime | None:
    if not text:
        return None
    t = text.strip().replace("Z", "+00:00")
    # Go writes nanoseconds; Python takes at most microseconds.
    if "." in t:
        head, frac = t.split(".", 1)
        digits = "".join(c for c in frac if c.isdigit())
        tz = frac[len(digits):]
        t = f"{head}.{digits[:6]}{tz}"
    try:
        dt = _dt.datetime.fromisoformat(t)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=_dt.UTC)


@dataclass(frozen=True)
class ImageRow:
    repository: str
    tag: str
    id: str
    created: _dt.datetime | None
    size: int
    image: Image = field(repr=False)


@dataclass(frozen=True)
class HistoryRow:
    """One row of ``history``, newest first, as Docker prints it."""

    id: str  # the local image id, or "<missing>"
    created: _dt.datetime | None
    created_by: str
    size: int
    comment: str
    empty_layer: bool
    diff_id: str = ""


@dataclass(frozen=True)
class LayerRow:
    index: int
    digest: str
    diff_id: str
    chain_id: str
    size: int
    files: int
    created_by: str
    path: str
    media_type: str = MT_OCI_LAYER


@dataclass(frozen=True)
class RemoveResult:
    untagged: list[str]
    deleted: list[str]

    def lines(self) -> list[str]:
        return [f"Untagged: {n}" for n in self.untagged] + [f"Deleted: {d}" for d in self.deleted]
