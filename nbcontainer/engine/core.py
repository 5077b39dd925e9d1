"""The engine's typed core: one store root's image store, snapshotter and runtime.

Every noun module (``images``, ``containers``, ``networks``, ``archives``, ``registry``,
``bootstrap``) works on a :class:`Core`; :class:`nbcontainer.engine.Engine` composes them. The core
also holds what several nouns need: resolving an image, the unpack of its layers (one loop, in the
snapshotter), and the container bookkeeping an image removal must respect.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbcontainer.oci import Descriptor, ImageConfig
from nbcontainer.snapshot import Snapshotter
from nbcontainer.store import Image, ImageStore

if TYPE_CHECKING:
    from nbcontainer.runtime import ContainerState, Runtime

__all__ = ["Core", "default_root", "host_arch", "make_private"]


def default_root() -> Path:
    """``$NBCONTAINER_ROOT``, else ``/var/lib/nbcontainer`` as root, else ``~/.local/share/nbcontainer``."""
    env = os.environ.get("NBCONTAINER_ROOT")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/nbcontainer")
    return Path.home() / ".local" / "share" / "nbcontainer"


def host_arch() -> str:
    """The host's architecture in OCI's words (``amd64``, ``arm64`` …)."""
    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}.get(m, m)


def make_private(root: Path) -> None:
    """The store root 0700 (made so, or tightened when an older version left it open): layer files,
    configs with ``-e`` values and logs are nobody else's business."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = root.stat()
    if st.st_uid == os.geteuid() and st.st_mode & 0o077:
        os.chmod(root, 0o700)


class Core:
    """Store, snapshotter and (made on first use, root only) runtime of one store root."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()
        make_private(self.root)
        self.store = ImageStore(self.root)
        self.snapshots = Snapshotter(self.root)
        self.store.content.sweep()
        self._runtime: Runtime | None = None

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            if os.geteuid() != 0:
                from nbcontainer.errors import UnsupportedHostError

                raise UnsupportedHostError(
                    "running containers needs root here (namespaces, overlay mounts and cgroups)",
                    fix="images, history, layers, files, save/load and the widgets work without it")
            from nbcontainer.runtime import Runtime

            self._runtime = Runtime(self.root)
        return self._runtime

    def container(self, ref: str) -> ContainerState:
        """A container's state by name, full id or unique id prefix (the runtime resolves it)."""
        return self.runtime.state(ref)

    def image(self, ref: str) -> Image:
        return self.store.resolve(ref)

    def image_size(self, img: Image) -> int:
        total = 0
        for chain in img.config.chain_ids:
            if self.snapshots.has_layer(chain):
                total += self.snapshots.layer(chain).size
            else:
                idx = img.config.chain_ids.index(chain)
                total += img.manifest.layers[idx].size if idx < len(img.manifest.layers) else 0
        return total

    def unpack(self, img: Image, progress: Callable[[int], None] | None = None) -> list[str]:
        """Unpack every layer of ``img`` not yet on disk (each layer once, shared by images)."""
        blobs = self.layer_blobs(img.config, img.manifest.layers)
        return self.snapshots.unpack_image(blobs, progress=progress)

    def layer_blobs(self, config: ImageConfig, layers: Sequence[Descriptor]) -> list[tuple[Path, str, str]]:
        return [(self.store.content.path(d.digest), diff_id, chain)
                for d, diff_id, chain in zip(layers, config.diff_ids, config.chain_ids, strict=False)]

    def prune_unused(self) -> None:
        """Remove unpacked layers no image or container needs, then unreferenced blobs."""
        needed: set[str] = set()
        for img in self.store.images():
            needed.update(img.config.chain_ids)
        needed.update(self.container_chains())
        for info in self.snapshots.layers():
            if info.chain_id not in needed:
                self.snapshots.remove_layer(info.chain_id)
        self.store.gc()

    def container_configs(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        cdir = self.root / "containers"
        if not cdir.is_dir():
            return out
        for e in os.scandir(cdir):
            try:
                out.append(json.loads(Path(e.path, "config.json").read_text()))
            except (FileNotFoundError, NotADirectoryError, ValueError):
                continue
        return out

    def containers_using(self, image_id: str) -> list[str]:
        return [c.get("id", "") for c in self.container_configs()
                if (c.get("annotations") or {}).get("image_id") == image_id]

    def container_chains(self) -> set[str]:
        return {(c.get("annotations") or {}).get("chain_id", "") for c in self.container_configs()} - {""}

    def add_and_unpack(self, config: ImageConfig, layers: list[Descriptor], name: str | None,
                        progress: Callable[[int], None] | None) -> Image:
        """Unpack first, name last: a hostile or broken layer leaves no image and no stray blob."""
        try:
            blobs = self.layer_blobs(config, layers)
            self.snapshots.unpack_image(blobs, progress=progress, undo_on_error=True)
        except BaseException:
            self.store.gc()
            raise
        return self.store.add_image(config, layers, name)
