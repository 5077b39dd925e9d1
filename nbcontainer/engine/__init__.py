"""``Engine(root)``: the public Python API. One method per verb; typed results, no printing.

The engine ties the parts together: the image store (blobs and names), the snapshotter (unpacked
layers, container layers) and the runtime (containers). It never mounts or forks itself: mounts
are made by helper processes (``mount(8)`` for image views, the runner for containers).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbcontainer.engine.containers import ContainerVerbs
from nbcontainer.engine.networks import NetworkVerbs
from nbcontainer.engine.registry import RegistryVerbs
from nbcontainer.engine.archives import StoreVerbs
from nbcontainer.errors import (
    InvalidArgumentError,
    NotFoundError,
    StateTransitionError,
)
from nbcontainer.oci import (
    MT_OCI_LAYER,
    Descriptor,
    Digest,
    History,
    ImageConfig,
    Reference,
    chain_ids,
)
from nbcontainer.snapshot import ContainerLayer, Snapshotter
from nbcontainer.engine.results import HistoryRow, ImageRow, LayerRow, RemoveResult, parse_time, utcnow
from nbcontainer.store import Image, ImageStore

__all__ = ["Engine", "HistoryRow", "ImageRow", "LayerRow", "RemoveResult", "default_root"]

REPO_DIGESTS_ANNOTATION = "io.nbcontainer.repo-digests"


def default_root() -> Path:
    """``$NBCONTAINER_ROOT``, else ``/var/lib/nbcontainer`` as root, else ``~/.local/share/nbcontainer``."""
    env = os.environ.get("NBCONTAINER_ROOT")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/nbcontainer")
    return Path.home() / ".local" / "share" / "nbcontainer"


class Engine(RegistryVerbs, ContainerVerbs, NetworkVerbs, StoreVerbs):
    """The nbcontainer API over one store root.

    Parameters
    ----------
    root:
        The store root; defaults to :func:`default_root`.
    """

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.root.mkdir(parents=True, exist_ok=True)
        self.store = ImageStore(self.root)
        self.snapshots = Snapshotter(self.root)
        self.store.content.sweep()
        self._runtime: Any = None

    def __repr__(self) -> str:
        return f"Engine(root={str(self.root)!r})"

    # -- images ---------------------------------------------------------------------------

    def image(self, ref: str) -> Image:
        return self.store.resolve(ref)

    def images(self, *, all: bool = False) -> list[ImageRow]:
        rows: list[ImageRow] = []
        for img in self.store.images():
            created = parse_time(img.config.created)
            size = self._image_size(img)
            if img.names:
                for name in img.names:
                    ref = Reference.parse(name)
                    rows.append(ImageRow(ref.familiar_name, ref.tag or "<none>", img.id, created, size, img))
            else:
                rows.append(ImageRow("<none>", "<none>", img.id, created, size, img))
        rows.sort(key=lambda r: (r.created or _dt.datetime.min.replace(tzinfo=_dt.UTC)), reverse=True)
        return rows

    def _image_size(self, img: Image) -> int:
        total = 0
        for chain in img.config.chain_ids:
            if self.snapshots.has_layer(chain):
                total += self.snapshots.layer(chain).size
            else:
                idx = img.config.chain_ids.index(chain)
                total += img.manifest.layers[idx].size if idx < len(img.manifest.layers) else 0
        return total

    def history(self, ref: str) -> list[HistoryRow]:
        """Docker's ``history``: newest first; ``<missing>`` where no local image has that id."""
        img = self.image(ref)
        cfg = img.config
        hist = list(cfg.history) or [History(created=cfg.created) for _ in cfg.diff_ids]
        others = self.store.images()
        rows: list[HistoryRow] = []
        layer_i = 0
        for k, h in enumerate(hist):
            diff_id = ""
            size = 0
            if not h.empty_layer and layer_i < len(cfg.diff_ids):
                diff_id = cfg.diff_ids[layer_i]
                chain = chain_ids(cfg.diff_ids[: layer_i + 1])[-1]
                if self.snapshots.has_layer(chain):
                    size = self.snapshots.layer(chain).size
                elif layer_i < len(img.manifest.layers):
                    size = img.manifest.layers[layer_i].size
                layer_i += 1
            if k == len(hist) - 1:
                image_id = img.id
            else:
                image_id = _prefix_image(others, hist[: k + 1], cfg.diff_ids[:layer_i]) or "<missing>"
            rows.append(HistoryRow(image_id, parse_time(h.created), h.created_by, size, h.comment,
                                   h.empty_layer, diff_id))
        rows.reverse()
        return rows

    def layers(self, ref: str) -> list[LayerRow]:
        """Per layer, bottom first: digest, diff_id, chain_id, size, file count, created_by, dir."""
        img = self.image(ref)
        self.unpack(img)
        by_layer = [h.created_by for h in img.config.history if not h.empty_layer]
        rows = []
        for i, (desc, diff_id, chain) in enumerate(
            zip(img.manifest.layers, img.config.diff_ids, img.config.chain_ids)
        ):
            info = self.snapshots.layer(chain)
            files = info.entries if info.entries >= 0 else _count_entries(info.path)
            rows.append(LayerRow(i, desc.digest, diff_id, chain, info.size, files,
                                 by_layer[i] if i < len(by_layer) else "", str(info.path), desc.media_type))
        return rows

    def layer_dirs(self, ref: str) -> list[str]:
        """The unpacked ``diff`` dir of each layer of an image, bottom first."""
        img = self.image(ref)
        self.unpack(img)
        return [str(self.snapshots.layer(c).path) for c in img.config.chain_ids]

    def container_layer(self, ref: str) -> ContainerLayer:
        """The overlay dirs of a container: ``lower_dirs`` (top first), ``upper``, ``work``, ``merged``."""
        c = self.container(ref)
        return self.snapshots.container_layer(c.spec.annotations.get("snapshot_key", c.id))

    def files(self, ref: str) -> list:
        """Every entry of every layer with kind (added/modified/whiteout) and who shadows it.

        Returns the per-layer entry lists of :func:`nbcontainer.analysis.union.union`, bottom first; read
        from the unpacked dirs, so it needs no mount (works unprivileged).
        """
        from nbcontainer.analysis.union import union

        return union(self.layer_dirs(ref))

    def unpack(self, img: Image, progress: Callable[[int], None] | None = None) -> list[str]:
        """Unpack every layer of ``img`` not yet on disk (each layer once, shared by images)."""
        return self.snapshots.unpack_image(self._layer_blobs(img.config, img.manifest.layers), progress=progress)

    def _layer_blobs(self, config: ImageConfig, layers: Sequence[Descriptor]) -> list[tuple[Path, str, str]]:
        return [(self.store.content.path(d.digest), diff_id, chain)
                for d, diff_id, chain in zip(layers, config.diff_ids, config.chain_ids)]

    def inspect_image(self, ref: str) -> dict[str, Any]:
        """Docker-shaped ``image inspect`` object (the CLI prints a JSON array of these)."""
        img = self.image(ref)
        cfg = img.config
        self.unpack(img)
        dirs = [str(self.snapshots.layer(c).path) for c in cfg.chain_ids]
        graph: dict[str, str] = {}
        if dirs:
            top = Path(dirs[-1]).parent
            graph = {"MergedDir": str(top / "merged"), "UpperDir": dirs[-1], "WorkDir": str(top / "work")}
            if len(dirs) > 1:
                graph["LowerDir"] = ":".join(reversed(dirs[:-1]))
        repo_digests = [x for x in img.manifest.annotations.get(REPO_DIGESTS_ANNOTATION, "").split(",") if x]
        return {
            "Id": str(img.id),
            "RepoTags": list(img.familiar_names),
            "RepoDigests": repo_digests,
            "Parent": "",
            "Comment": cfg.history[-1].comment if cfg.history else "",
            "Created": cfg.created,
            "Author": cfg.author,
            "Config": cfg.config,
            "Architecture": cfg.architecture,
            "Os": cfg.os,
            "Size": self._image_size(img),
            "GraphDriver": {"Name": "overlay2", "Data": graph},
            "RootFS": {"Type": "layers", "Layers": [str(d) for d in cfg.diff_ids]},
            "Metadata": {"ManifestDigest": str(img.manifest_digest)},
        }

    def inspect(self, obj: str, *, type: str | None = None) -> dict[str, Any]:
        """``inspect`` of an image or a container (containers first, as Docker does)."""
        if type != "image" and hasattr(self, "inspect_container"):
            try:
                return self.inspect_container(obj)
            except NotFoundError:
                if type == "container":
                    raise
        if type == "container":
            raise NotFoundError(f"container {obj!r} not found")
        try:
            return self.inspect_image(obj)
        except NotFoundError:
            if type == "image":
                raise
            raise NotFoundError(f"no such object: {obj!r}") from None

    def tag(self, source: str, target: str) -> str:
        img = self.image(source)
        return self.store.tag(img, target)

    def rmi(self, ref: str, *, force: bool = False, prune_layers: bool = True) -> RemoveResult:
        """Untag ``ref``; delete the image when it has no name left (``docker rmi``)."""
        img = self.image(ref)
        untagged: list[str] = []
        by_name = False
        try:
            parsed = str(Reference.parse(ref))
            by_name = parsed in img.names
        except InvalidArgumentError:
            pass
        users = [c for c in self._containers_using(img.id)]
        if users and not force:
            raise StateTransitionError(
                f"unable to remove image {ref!r}: image is in use by container {users[0][:12]} (use -f)"
            )
        if by_name and len(img.names) > 1:
            self.store.untag(parsed)
            return RemoveResult([Reference.parse(parsed).familiar], [])
        if not by_name and len(img.names) > 1 and not force:
            raise StateTransitionError(
                f"unable to delete image {img.id.short} (must be forced): image is referenced in "
                "multiple repositories"
            )
        for name in img.names:
            untagged.append(Reference.parse(name).familiar)
        self.store.remove(img)
        deleted = [str(img.id)]
        if prune_layers:
            self._prune_unused()
        return RemoveResult(untagged, deleted)

    def _prune_unused(self) -> None:
        """Remove unpacked layers no image or container needs, then unreferenced blobs."""
        needed: set[str] = set()
        for img in self.store.images():
            needed.update(img.config.chain_ids)
        needed.update(self._container_chains())
        for info in self.snapshots.layers():
            if info.chain_id not in needed:
                self.snapshots.remove_layer(info.chain_id)
        self.store.gc()

    # container bookkeeping shared with the runtime half (a container records its image id and
    # chain in its config's annotations)
    def _container_configs(self) -> list[dict[str, Any]]:
        out = []
        cdir = self.root / "containers"
        if not cdir.is_dir():
            return out
        for e in os.scandir(cdir):
            try:
                out.append(json.loads(Path(e.path, "config.json").read_text()))
            except (FileNotFoundError, NotADirectoryError, ValueError):
                continue
        return out

    def _containers_using(self, image_id: str) -> list[str]:
        return [c.get("id", "") for c in self._container_configs()
                if (c.get("annotations") or {}).get("image_id") == image_id]

    def _container_chains(self) -> set[str]:
        return {(c.get("annotations") or {}).get("chain_id", "") for c in self._container_configs()} - {""}

    # -- building images ------------------------------------------------------------------

    def bootstrap(self, what: str = "busybox", *, tag: str | None = None,
                  progress: Callable[[int], None] | None = None) -> Image:
        """Build a base image without a registry: ``busybox`` or ``debian[:SUITE]``."""
        from nbcontainer.engine import bootstrap as _bs

        kind, _, suite = what.partition(":")
        if kind == "busybox":
            with self.store.content.writer() as w:
                base = _bs.write_busybox_layer(w)  # type: ignore[arg-type]
                diff_id = w.commit(what="busybox layer")
                size = w.size
            name = tag or "busybox:latest"
        elif kind == "debian":
            suite = suite or "bookworm"
            with tempfile.TemporaryDirectory(dir=self.store.content.ingest_dir) as tmp:
                out = os.path.join(tmp, "rootfs.tar")
                base = _bs.mmdebstrap_rootfs(suite, out)
                diff_id = self.store.content.put_file(out, what="debian layer")
                size = os.path.getsize(out)
            name = tag or f"debian:{suite}"
        else:
            raise InvalidArgumentError(f"unknown bootstrap source {what!r} (use busybox or debian[:SUITE])")
        created = _dt.datetime.fromtimestamp(base.created, _dt.UTC).isoformat().replace("+00:00", "Z")
        history = (
            History(created=created, created_by=base.created_by, comment=base.comment),
            History(created=created, created_by=f'/bin/sh -c #(nop)  CMD {json.dumps(list(base.cmd))}',
                    empty_layer=True),
        )
        config = ImageConfig(
            architecture=_host_arch(), os="linux", created=created,
            config={"Env": list(base.env), "Cmd": list(base.cmd)},
            diff_ids=(diff_id,), history=history,
        )
        return self._add_and_unpack(config, [Descriptor(MT_OCI_LAYER, diff_id, size)], name, progress)

    def import_(self, tarball: str | os.PathLike, ref: str | None = None, *, message: str = "",
                changes: list[str] | None = None) -> Image:
        """``docker import``: a rootfs tarball (plain, gzip, zstd or xz) becomes a one-layer image."""
        from nbcontainer import layers as _layers  # with zstandard: on first use, not with the engine

        path = os.fspath(tarball)
        if not os.path.isfile(path):
            raise NotFoundError(f"tarball {path!r} not found")
        with open(path, "rb") as raw, _layers.open_decompressed(raw) as src:
            diff_id = self.store.content.put_stream(src, what=f"tarball {path!r}")
        size = self.store.content.size(diff_id)
        now = utcnow()
        history = (History(created=now, created_by="", comment=message or f"Imported from {path}"),)
        runtime_cfg: dict[str, Any] = {}
        if changes:
            from nbcontainer.engine.changes import apply_changes

            runtime_cfg = apply_changes({}, changes)
        config = ImageConfig(architecture=_host_arch(), created=now, config=runtime_cfg,
                             diff_ids=(diff_id,), history=history)
        return self._add_and_unpack(config, [Descriptor(MT_OCI_LAYER, diff_id, size)], ref, None)

    def _add_and_unpack(self, config: ImageConfig, layers: list[Descriptor], name: str | None,
                        progress: Callable[[int], None] | None) -> Image:
        """Unpack first, name last: a hostile or broken layer leaves no image and no stray blob."""
        try:
            self.snapshots.unpack_image(self._layer_blobs(config, layers), progress=progress, undo_on_error=True)
        except BaseException:
            self.store.gc()
            raise
        return self.store.add_image(config, layers, name)


def _prefix_image(images: list[Image], hist: list[History], diff_ids: tuple[Digest, ...]) -> str:
    """The id of a local image whose history and layers are exactly this prefix, if any."""
    for img in images:
        if list(img.config.history) == hist and tuple(img.config.diff_ids) == tuple(diff_ids):
            return str(img.id)
    return ""


def _host_arch() -> str:
    import platform

    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(m, m)


def _count_entries(path: Path) -> int:
    n = 0
    for _dirpath, dirs, files in os.walk(path):
        n += len(dirs) + len(files)
    return n

