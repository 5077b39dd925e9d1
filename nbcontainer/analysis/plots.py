"""Matplotlib figures built with ``Figure()`` directly (never pyplot state)."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from nbcontainer.analysis.units import human_size, trunc


def layer_size_chart(layers_df: pd.DataFrame, *, title: str = "") -> Figure:
    """Horizontal bars, one per layer (bottom layer at the bottom), labelled by CREATED BY."""
    n = max(len(layers_df), 1)
    fig = Figure(figsize=(8, 0.6 * n + 1.2))
    ax = fig.add_subplot()
    labels = [f"{int(r['index'])}: {trunc(str(r['created_by']) or '-', 48)}" for _, r in layers_df.iterrows()]
    sizes = [int(s) for s in layers_df["size"]]
    bars = ax.barh(range(len(sizes)), sizes, color="#4c72b0")
    ax.set_yticks(range(len(sizes)), labels=labels, fontsize=8)
    for bar, size in zip(bars, sizes, strict=True):  # one bar per size
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, " " + human_size(size),
                va="center", fontsize=8)
    ax.set_xlabel("bytes")
    ax.set_title(title or "layer sizes")
    ax.margins(x=0.2)
    fig.tight_layout()
    return fig


def directory_sizes(files_df: pd.DataFrame, *, depth: int = 1, top: int = 15) -> Figure:
    """Bytes of visible files per directory prefix (``depth`` path components)."""
    vis = files_df[files_df["visible"] & (files_df["type"] == "file")]
    prefix = vis["path"].map(lambda p: "/" + "/".join(p.strip("/").split("/")[:depth]))
    sizes = vis.groupby(prefix)["size"].sum().sort_values(ascending=True).tail(top)
    fig = Figure(figsize=(8, 0.35 * len(sizes) + 1.2))
    ax = fig.add_subplot()
    ax.barh(list(sizes.index), list(sizes.values), color="#55a868")
    ax.set_xlabel("bytes")
    ax.set_title(f"largest directories (depth {depth})")
    fig.tight_layout()
    return fig
