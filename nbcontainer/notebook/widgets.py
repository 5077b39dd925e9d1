"""ipywidgets views over layers and union mounts.

Each widget builds its children in ``__init__``, wires ``observe``/``on_click`` and keeps an
``update()`` public; tests set ``.value`` and assert on attributes, no browser needed.
"""

from __future__ import annotations

import html
import os
from typing import Any

import ipywidgets as W

from nbcontainer.analysis import frames, plots
from nbcontainer.analysis.union import Entry, union
from nbcontainer.analysis.units import human_size

_KIND_LETTER = {"added": "A", "modified": "C"}
_KIND_COLOR = {"A": "#2e7d32", "C": "#ef6c00", "D": "#c62828"}


def _esc(x: Any) -> str:
    return html.escape(str(x))


class UnionMountView(W.VBox):
    """The layers of an image (or a container: its upper dir on top) stacked over the merged view.

    Pick a path (``.path.value = "/etc/passwd"``): ``.provider`` is the layer that provides it,
    ``.shadowed`` the copies it hides, and ``.info`` shows them with their dirs on disk.
    """

    def __init__(self, engine: Any, ref: str, *, container: bool | None = None) -> None:
        self.ref = ref
        self.dirs, self.labels = _stack(engine, ref, container)
        self.layers = union(self.dirs)
        self.by_path: dict[str, list[Entry]] = {}
        for entries in self.layers:
            for e in entries:
                self.by_path.setdefault(e.path, []).append(e)
        visible = sorted(p for p, es in self.by_path.items() if any(e.visible for e in es))
        self.stack = W.HTML(self._stack_html())
        self.path = W.Combobox(options=visible[:5000], placeholder="/etc/passwd", description="path",
                               ensure_option=False, layout=W.Layout(width="60%"))
        self.info = W.HTML("<i>pick a path to see which layer provides it</i>")
        self.provider: int | None = None
        self.shadowed: list[Entry] = []
        self.path.observe(lambda change: self.update(), names="value")
        super().__init__([W.HTML(f"<b>union mount of {_esc(ref)}</b>"), self.stack, self.path, self.info])

    def _stack_html(self) -> str:
        rows = []
        for i in range(len(self.dirs) - 1, -1, -1):
            n = len(self.layers[i])
            size = sum(e.size for e in self.layers[i])
            rows.append(f"<tr><td>{i}</td><td>{_esc(self.labels[i])}</td><td>{n}</td>"
                        f"<td>{human_size(size)}</td><td><code>{_esc(self.dirs[i])}</code></td></tr>")
        return ("<table class='nbc-stack'><tr><th>layer</th><th>role</th><th>entries</th><th>size</th>"
                "<th>dir on disk</th></tr>" + "".join(rows) + "</table>")

    def update(self) -> None:
        p = "/" + self.path.value.strip().lstrip("/") if self.path.value.strip() else ""
        copies = sorted(self.by_path.get(p, []), key=lambda e: -e.layer)
        if not copies:
            self.provider, self.shadowed = None, []
            self.info.value = f"<i>{_esc(p)} is not in any layer</i>" if p else ""
            return
        top = next((e for e in copies if e.visible), None)
        self.provider = top.layer if top else None
        self.shadowed = [e for e in copies if e is not top]
        lines = []
        for e in copies:
            where = os.path.join(self.dirs[e.layer], p.lstrip("/"))
            if e is top:
                role = "<b>provides it</b>"
            elif e.type == "whiteout":
                role = "whiteout: deletes the copies below"
            else:
                role = f"shadowed by layer {e.shadowed_by}"
            lines.append(f"<li>layer {e.layer} ({_esc(self.labels[e.layer])}): {e.type}, "
                         f"{human_size(e.size)}, {role}<br><code>{_esc(where)}</code></li>")
        head = (f"<b>{_esc(p)}</b> comes from layer {self.provider}" if top is not None
                else f"<b>{_esc(p)}</b> is deleted (whited out) in the merged view")
        self.info.value = head + "<ul>" + "".join(lines) + "</ul>"


def _stack(engine: Any, ref: str, container: bool | None) -> tuple[list[str], list[str]]:
    """Layer dirs bottom first and a label for each; a container adds its upper dir on top."""
    if container is not False:
        try:
            c = engine.container(ref)
        except Exception:
            if container:
                raise
            c = None
        if c is not None:
            layer = engine.container_layer(c.id)
            lowers = [str(d) for d in reversed(layer.image_dirs)]
            labels = [f"image layer {i}" for i in range(len(lowers))]
            if layer.init is not None:  # the runtime's stubs (/etc/hosts, /proc …), as Docker's -init
                lowers, labels = [*lowers, str(layer.init)], [*labels, "init (runtime stubs)"]
            return [*lowers, str(layer.upper)], [*labels, "container (upper)"]
    dirs = engine.layer_dirs(ref)
    hist = [h.created_by for h in engine.image(ref).config.history if not h.empty_layer]
    labels = [hist[i] if i < len(hist) else f"layer {i}" for i in range(len(dirs))]
    return dirs, [lab[:60] for lab in labels]


class DiffView(W.VBox):
    """A container's upper dir as a tree with A/C/D marks, whiteouts, opaque dirs and sizes.

    ``.kinds.value = ("A",)`` filters; ``.rows`` holds the shown DiffRows; ``.frame`` the DataFrame.
    """

    def __init__(self, engine: Any, container: str, rows: list | None = None) -> None:
        self.container = container
        self.all_rows = engine.diff(container) if rows is None else rows
        self.frame = frames.to_frame("diff", self.all_rows)
        self.kinds = W.ToggleButtons(options=["all", "A", "C", "D"], value="all", description="show")
        self.tree = W.HTML()
        self.summary = W.HTML()
        self.rows: list = []
        self.kinds.observe(lambda change: self.update(), names="value")
        super().__init__([W.HTML(f"<b>changes in container {_esc(container)}</b>"), self.kinds, self.summary,
                          self.tree])
        self.update()

    def update(self) -> None:
        want = self.kinds.value
        self.rows = [r for r in self.all_rows if want == "all" or r.kind == want]
        counts = {k: sum(1 for r in self.all_rows if r.kind == k) for k in "ACD"}
        added = sum(r.size for r in self.all_rows if r.kind in "AC")
        self.summary.value = (f"{counts['A']} added, {counts['C']} changed, {counts['D']} deleted; "
                              f"{human_size(added)} in the upper dir")
        items = []
        for r in self.rows:
            depth = r.path.count("/") - 1
            name = r.path.rsplit("/", 1)[-1]
            notes = []
            if r.whiteout:
                notes.append("whiteout")
            if r.opaque:
                notes.append("opaque dir")
            if r.size:
                notes.append(human_size(r.size))
            color = _KIND_COLOR[r.kind]
            items.append(
                f"<div style='padding-left:{depth * 1.2}em'><b style='color:{color}'>{r.kind}</b> "
                f"<span title='{_esc(r.path)}'>{_esc(name)}</span> "
                f"<small>{_esc(', '.join(notes))}</small></div>")
        tree = "<div class='nbc-diff'>" + "".join(items) + "</div>"
        self.tree.value = tree if items else "<i>no changes</i>"


class LayerExplorer(W.VBox):
    """dive-like: pick a layer (``.layer.value = i``), see its changes, the image's efficiency
    score and wasted space (earlier copies that a later layer overwrites or deletes, counted once)."""

    def __init__(self, engine: Any, image: str) -> None:
        self.image = image
        self.layers_df = frames.to_frame("layers", engine.layers(image))
        self.files = frames.to_frame("files", engine.files(image))
        self.wasted = frames.wasted(self.files)
        self.efficiency = frames.efficiency(self.files)
        options = [(f"{int(r['index'])}: {str(r['created_by'])[:50]} ({human_size(int(r['size']))})",
                    int(r["index"])) for _, r in self.layers_df.iterrows()]
        self.layer = W.Dropdown(options=options, description="layer", layout=W.Layout(width="80%"))
        self.score = W.HTML(
            f"efficiency <b>{self.efficiency:.1%}</b>, "
            f"wasted <b>{human_size(float(self.wasted['size'].sum()))}</b>"
            f" in {len(self.wasted)} shadowed copies")
        self.changes = self.files.iloc[0:0]
        self.table = W.HTML()
        self.layer.observe(lambda change: self.update(), names="value")
        super().__init__([W.HTML(f"<b>layers of {_esc(image)}</b>"), self.score, self.layer, self.table])
        self.update()

    def update(self) -> None:
        i = self.layer.value if self.layer.value is not None else 0
        self.changes = self.files[self.files["layer"] == i].reset_index(drop=True)
        shown = self.changes.head(400)
        rows = "".join(
            f"<tr><td style='color:{_KIND_COLOR[_KIND_LETTER.get(str(r.kind), 'D')]}'>"
            f"{r.kind}</td><td>{_esc(r.path)}</td><td>{human_size(float(size))}</td>"
            f"<td>{'shadowed' if r.shadowed else ''}</td></tr>"
            for r, size in zip(shown.itertuples(), shown["size"].tolist(), strict=True))
        more = f"<i>… {len(self.changes) - len(shown)} more</i>" if len(self.changes) > len(shown) else ""
        self.table.value = ("<table><tr><th>kind</th><th>path</th><th>size</th><th></th></tr>" + rows
                            + "</table>" + more)


class LayerSizeChart:
    """A layer size chart for an image; ``.figure`` is the matplotlib Figure, shown inline."""

    def __init__(self, engine, image: str) -> None:
        self.image = image
        self.frame = frames.to_frame("layers", engine.layers(image))
        self.figure = plots.layer_size_chart(self.frame, title=f"layer sizes of {image}")

    def _repr_png_(self) -> bytes:
        import io

        buf = io.BytesIO()
        self.figure.savefig(buf, format="png")
        return buf.getvalue()
