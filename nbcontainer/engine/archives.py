"""Store-level verbs, one of the nouns :class:`nbcontainer.Engine` composes: save/load archives,
read-only image mounts, disk usage, prune and fsck."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nbcontainer.engine.core import Core
from nbcontainer.errors import InvalidArgumentError, NotFoundError, UnsupportedHostError
from nbcontainer.oci import Reference


class Archives:
    """Store-level verbs over a :class:`~nbcontainer.engine.core.Core`."""

    def __init__(self, core: Core) -> None:
        self.core = core


    # -- archives ---------------------------------------------------------------------------

    def save(self, refs: list[str] | str, out: str | os.PathLike, *, format: str = "docker+oci",
             compress: str | None = None, progress: Callable[[int], None] | None = None) -> str:
        """``docker save``: images to one tar (by default both a docker-archive and an OCI layout)."""
        from nbcontainer.transfer.archive import sources as archive

        if isinstance(refs, str):
            refs = [refs]
        pairs = []
        for ref in refs:
            img = self.core.image(ref)
            names: list[str] = []
            try:
                full = str(Reference.parse(ref))
                if full in img.names:
                    names = [full]
            except InvalidArgumentError:
                pass
            pairs.append((img, names))
        archive.save(self.core.store, pairs, out, format=format, compress=compress, progress=progress)
        return os.fspath(out)

    def load(self, src: str | os.PathLike, *, progress: Callable[[int], None] | None = None) -> list[Any]:
        """``docker load``: every image of an archive or OCI layout dir; layers unpacked and verified.

        An image whose layers fail to unpack (an unsafe member, say) is removed again, so a bad
        archive leaves the store as it was.
        """
        from nbcontainer.transfer.archive import sources as archive

        if not os.path.exists(src):
            raise NotFoundError(f"archive {os.fspath(src)!r} not found")
        before = {i.manifest_digest: i.names for i in self.core.store.images()}
        loaded = archive.load(self.core.store, src, progress=progress)
        try:
            for item in loaded:
                self.core.unpack(item.image)
        except BaseException:
            for item in loaded:
                if item.image.manifest_digest not in before:
                    self.core.store.remove(item.image)
                else:
                    for name in item.names:
                        if name not in before[item.image.manifest_digest]:
                            self.core.store.untag(name)
            self.core.prune_unused()
            raise
        return loaded

    # -- image mounts (a helper process mounts; the caller never does) -------------------

    def mount(self, ref: str, target: str | os.PathLike) -> str:
        """Mount a read-only overlay of ``ref`` on ``target`` (as ``mount(8)`` shows it)."""
        img = self.core.image(ref)
        self.core.unpack(img)
        if not img.config.chain_ids:
            raise InvalidArgumentError(f"image {ref!r} has no layers to mount")
        m = self.core.snapshots.view(img.config.chain_ids[-1])
        target = os.path.abspath(os.fspath(target))
        if not os.path.isdir(target):
            raise NotFoundError(f"mount point {target!r} not found")
        if shutil.which("mount") is None:
            raise UnsupportedHostError("mount(8) is not installed", fix="apt-get install mount")
        if m.type == "bind":
            argv = ["mount", "--bind", "-o", "ro", m.source, target]
        else:
            argv = ["mount", "-t", "overlay", "overlay", "-o", ",".join(m.options), target]
        proc = subprocess.run(argv, cwd=m.cwd or None, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise UnsupportedHostError(
                f"cannot mount image {ref!r} on {target!r}: {proc.stderr.strip() or proc.returncode}",
                fix="mounting needs root (or a user namespace with overlay userxattr)",
            )
        if m.type == "bind":
            subprocess.run(["mount", "-o", "remount,bind,ro", target], capture_output=True, check=False)
        return target

    def umount(self, target: str | os.PathLike) -> None:
        target = os.path.abspath(os.fspath(target))
        proc = subprocess.run(["umount", target], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise InvalidArgumentError(f"cannot unmount {target!r}: {proc.stderr.strip()}")

    # -- disk usage and repair ------------------------------------------------------------

    def df(self) -> list[dict[str, Any]]:
        """``system df``: TYPE, TOTAL, ACTIVE, SIZE, RECLAIMABLE (bytes)."""
        images = self.core.store.images()
        configs = self.core.container_configs()
        used_ids = {(c.get("annotations") or {}).get("image_id") for c in configs}
        layer_sizes = {info.chain_id: info.size for info in self.core.snapshots.layers()}
        active_chains = {c for i in images if i.id in used_ids for c in i.config.chain_ids}
        running = set()
        if configs and os.geteuid() == 0:
            running = {st.id for st in self.core.runtime.list() if st.status in ("running", "paused")}
        sizes = {c.get("id", ""): _du(self.core.snapshots.overlay_dir / key / "diff")
                 for c in configs if (key := (c.get("annotations") or {}).get("snapshot_key", ""))}
        blobs = list(self.core.store.content.walk())
        return [
            {"TYPE": "Images", "TOTAL": len(images), "ACTIVE": sum(1 for i in images if i.id in used_ids),
             "SIZE": sum(layer_sizes.values()),
             "RECLAIMABLE": sum(s for c, s in layer_sizes.items() if c not in active_chains)},
            {"TYPE": "Containers", "TOTAL": len(configs), "ACTIVE": len(running),
             "SIZE": sum(sizes.values()),
             "RECLAIMABLE": sum(s for cid, s in sizes.items() if cid not in running)},
            {"TYPE": "Blobs", "TOTAL": len(blobs), "ACTIVE": 0,
             "SIZE": sum(self.core.store.content.size(d) for d in blobs), "RECLAIMABLE": 0},
        ]

    def image_prune(self) -> Any:
        """Remove unnamed images no container uses; a :class:`~nbcontainer.engine.RemoveResult`."""
        from nbcontainer.engine.results import RemoveResult

        deleted = []
        for img in self.core.store.images():
            if not img.names and not self.core.containers_using(img.id):
                self.core.store.remove(img)
                deleted.append(str(img.id))
        self.core.prune_unused()
        return RemoveResult([], deleted)

    def fsck(self, *, repair: bool = False) -> list[str]:
        problems = [f"ingest leftover swept: {n}" for n in [self.core.store.content.sweep()] if n]
        problems += self.core.snapshots.fsck(repair=repair, live_keys=self._live_snapshot_keys())
        for d in self.core.store.content.walk():
            if not self.core.store.content.verify(d):
                problems.append(f"corrupt blob {d}")
        for img in self.core.store.images():
            for desc in img.manifest.layers:
                if not self.core.store.content.has(desc.digest):
                    problems.append(f"image {img.id.short}: missing layer blob {desc.digest}")
        return problems

    def _live_snapshot_keys(self) -> set[str] | None:
        """Snapshot keys of the containers on disk (``containers/<id>``), or None when the dir
        cannot be read (then fsck leaves container layers alone)."""
        try:
            keys = {e.name for e in os.scandir(self.core.root / "containers")}
        except FileNotFoundError:
            keys = set()
        except OSError:
            return None
        for c in self.core.container_configs():
            keys.add((c.get("annotations") or {}).get("snapshot_key", "") or c.get("id", ""))
        return keys



def _du(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(FileNotFoundError):  # removed while we walk
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total
