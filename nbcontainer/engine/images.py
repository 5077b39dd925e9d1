"""Images: list, history, layers, files, inspect, tag, rmi and ``import`` (``docker import``)."""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any

from nbcontainer.engine.core import Core, host_arch
from nbcontainer.engine.results import HistoryRow, ImageRow, LayerRow, RemoveResult, parse_time, utcnow
from nbcontainer.errors import InvalidArgumentError, NotFoundError, StateTransitionError
from nbcontainer.oci import MT_OCI_LAYER, Descriptor, Digest, History, ImageConfig, Reference
from nbcontainer.snapshot import ContainerLayer
from nbcontainer.store import Image

REPO_DIGESTS_ANNOTATION = "io.nbcontainer.repo-digests"


class Images:
    """The image verbs over a :class:`~nbcontainer.engine.core.Core`."""

    def __init__(self, core: Core) -> None:
        self.core = core

    def images(self, *, all: bool = False) -> list[ImageRow]:
        rows: list[ImageRow] = []
        # An image stored invalid (by an older version, or damaged) is listed like Docker lists every
        # image it holds, with created None and ``row.image.problem`` saying why, so one bad image
        # never hides the others and the user sees what to ``rmi``.
        for img in self.core.store.images(broken=True):
            created = None if img.problem else parse_time(img.config.created)
            size = img.size if img.problem else self.core.image_size(img)
            named = False
            for name in img.names:
                try:
                    ref = Reference.parse(name)
                except InvalidArgumentError:
                    continue  # a name index.json should never hold; fsck reports it
                named = True
                rows.append(ImageRow(ref.familiar_name, ref.tag or "<none>", img.id, created, size, img))
            if not named:
                rows.append(ImageRow("<none>", "<none>", img.id, created, size, img))
        rows.sort(key=lambda r: (r.created or _dt.datetime.min.replace(tzinfo=_dt.UTC)), reverse=True)
        return rows

    def history(self, ref: str) -> list[HistoryRow]:
        """Docker's ``history``: newest first; ``<missing>`` where no local image has that id."""
        img = self.core.image(ref)
        cfg = img.config
        hist = list(cfg.history) or [History(created=cfg.created) for _ in cfg.diff_ids]
        prefixes = _PrefixIndex(self.core.store.images())
        chains = cfg.chain_ids
        rows: list[HistoryRow] = []
        layer_i = 0
        hist_key = 0
        for k, h in enumerate(hist):
            hist_key = _fold(hist_key, h)
            diff_id = ""
            size = 0
            if not h.empty_layer and layer_i < len(cfg.diff_ids):
                diff_id = cfg.diff_ids[layer_i]
                chain = chains[layer_i]
                if self.core.snapshots.has_layer(chain):
                    size = self.core.snapshots.layer(chain).size
                elif layer_i < len(img.manifest.layers):
                    size = img.manifest.layers[layer_i].size
                layer_i += 1
            if k == len(hist) - 1:
                image_id = str(img.id)
            else:
                image_id = prefixes.find(hist, k + 1, hist_key, cfg.diff_ids, layer_i,
                                         chains[layer_i - 1] if layer_i else "") or "<missing>"
            rows.append(HistoryRow(image_id, parse_time(h.created), h.created_by, size, h.comment,
                                   h.empty_layer, diff_id))
        rows.reverse()
        return rows

    def layers(self, ref: str) -> list[LayerRow]:
        """Per layer, bottom first: digest, diff_id, chain_id, size, file count, created_by, dir."""
        img = self.core.image(ref)
        self.core.unpack(img)
        by_layer = [h.created_by for h in img.config.history if not h.empty_layer]
        rows = []
        for i, (desc, diff_id, chain) in enumerate(
            zip(img.manifest.layers, img.config.diff_ids, img.config.chain_ids, strict=False)
        ):
            info = self.core.snapshots.layer(chain)
            files = info.entries if info.entries >= 0 else _count_entries(info.path)
            rows.append(LayerRow(i, desc.digest, diff_id, chain, info.size, files,
                                 by_layer[i] if i < len(by_layer) else "", str(info.path), desc.media_type))
        return rows

    def layer_dirs(self, ref: str) -> list[str]:
        """The unpacked ``diff`` dir of each layer of an image, bottom first."""
        img = self.core.image(ref)
        self.core.unpack(img)
        return [str(self.core.snapshots.layer(c).path) for c in img.config.chain_ids]

    def container_layer(self, ref: str) -> ContainerLayer:
        """The overlay dirs of a container: ``lower_dirs`` (top first), ``upper``, ``work``, ``merged``."""
        c = self.core.container(ref)
        return self.core.snapshots.container_layer(c.spec.annotations.get("snapshot_key", c.id))

    def files(self, ref: str) -> list:
        """Every entry of every layer with kind (added/modified/whiteout) and who shadows it.

        Returns the per-layer entry lists of :func:`nbcontainer.analysis.union.union`, bottom first; read
        from the unpacked dirs, so it needs no mount (works unprivileged).
        """
        from nbcontainer.analysis.union import union

        return union(self.layer_dirs(ref))

    def inspect_image(self, ref: str) -> dict[str, Any]:
        """Docker-shaped ``image inspect`` object (the CLI prints a JSON array of these)."""
        img = self.core.image(ref)
        cfg = img.config
        self.core.unpack(img)
        dirs = [str(self.core.snapshots.layer(c).path) for c in cfg.chain_ids]
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
            "Size": self.core.image_size(img),
            "GraphDriver": {"Name": "overlay2", "Data": graph},
            "RootFS": {"Type": "layers", "Layers": [str(d) for d in cfg.diff_ids]},
            "Metadata": {"ManifestDigest": str(img.manifest_digest)},
        }

    def tag(self, source: str, target: str) -> str:
        img = self.core.image(source)
        return self.core.store.tag(img, target)

    def rmi(self, ref: str, *, force: bool = False, prune_layers: bool = True) -> RemoveResult:
        """Untag ``ref``; delete the image when it has no name left (``docker rmi``)."""
        img = self.core.store.resolve(ref, broken=True)  # an invalid stored image can still be removed
        untagged: list[str] = []
        by_name = False
        try:
            parsed = str(Reference.parse(ref))
            by_name = parsed in img.names
        except InvalidArgumentError:
            pass
        if by_name and len(img.names) > 1:
            # one name of several: only the name goes, whoever uses the image (as Docker)
            self.core.store.untag(parsed)
            return RemoveResult([Reference.parse(parsed).familiar], [])
        users = self.core.containers_using(img.id)
        if users and not force:
            raise StateTransitionError(
                f"unable to remove image {ref!r}: image is in use by container {users[0][:12]} (use -f)"
            )
        if not by_name and len(img.names) > 1 and not force:
            raise StateTransitionError(
                f"unable to delete image {img.id.short} (must be forced): image is referenced in "
                "multiple repositories"
            )
        for name in img.names:
            untagged.append(Reference.parse(name).familiar)
        self.core.store.remove(img)
        deleted = [str(img.id)]
        if prune_layers:
            self.core.prune_unused()
        return RemoveResult(untagged, deleted)

    def import_(self, tarball: str | os.PathLike, ref: str | None = None, *, message: str = "",
                changes: list[str] | None = None) -> Image:
        """``docker import``: a rootfs tarball (plain, gzip, zstd or xz) becomes a one-layer image."""
        from nbcontainer import layers as _layers  # with zstandard: on first use, not with the engine

        path = os.fspath(tarball)
        if not os.path.isfile(path):
            raise NotFoundError(f"tarball {path!r} not found")
        with open(path, "rb") as raw, _layers.open_decompressed(raw) as src:
            diff_id = self.core.store.content.put_stream(src, what=f"tarball {path!r}")
        size = self.core.store.content.size(diff_id)
        now = utcnow()
        history = (History(created=now, created_by="", comment=message or f"Imported from {path}"),)
        runtime_cfg: dict[str, Any] = {}
        if changes:
            from nbcontainer.engine.changes import apply_changes

            runtime_cfg = apply_changes({}, changes)
        config = ImageConfig(architecture=host_arch(), created=now, config=runtime_cfg,
                             diff_ids=(diff_id,), history=history)
        return self.core.add_and_unpack(config, [Descriptor(MT_OCI_LAYER, diff_id, size)], ref, None)


def _fold(key: int, row: History) -> int:
    """The running hash of a history prefix: one step per row, so every prefix costs O(1) more."""
    return hash((key, row))


class _PrefixIndex:
    """Local images keyed by (history length, history hash, layer count, top chain id), so that
    ``history`` finds the image whose history and layers are exactly a given prefix in O(1) per row
    instead of comparing every image's history with every prefix (which was quadratic).

    A key hit is confirmed by comparing the rows and diff_ids themselves; an image is only a candidate
    for the one prefix length equal to its own history length, so the confirmations together cost at most
    the total length of the other images' histories. Ties go to the first image in store order.
    """

    def __init__(self, images: list[Image]) -> None:
        self.by_key: dict[tuple[int, int, int, str], list[Image]] = {}
        for img in images:
            key = 0
            for row in img.config.history:
                key = _fold(key, row)
            chains = img.config.chain_ids
            k = (len(img.config.history), key, len(chains), str(chains[-1]) if chains else "")
            self.by_key.setdefault(k, []).append(img)

    def find(self, hist: list[History], n_rows: int, hist_key: int, diff_ids: tuple[Digest, ...],
             n_layers: int, top_chain: str) -> str:
        """The id of a local image whose history is ``hist[:n_rows]`` and layers ``diff_ids[:n_layers]``."""
        for img in self.by_key.get((n_rows, hist_key, n_layers, str(top_chain)), ()):
            if (list(img.config.history) == hist[:n_rows]
                    and tuple(img.config.diff_ids) == diff_ids[:n_layers]):
                return str(img.id)
        return ""


def _count_entries(path: Path) -> int:
    n = 0
    for _dirpath, dirs, files in os.walk(path):
        n += len(dirs) + len(files)
    return n

