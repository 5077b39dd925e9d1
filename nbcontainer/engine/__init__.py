"""``Engine(root)``: the public Python API. One method per verb; typed results, no printing.

The engine composes one module per noun over a typed :class:`~nbcontainer.engine.core.Core` (the
image store, the snapshotter and the runtime of one store root): ``images``, ``containers``,
``networks``, ``archives`` (save/load, mounts, df, prune, fsck), ``registry`` and ``bootstrap``;
rows are in ``results``. Each method below hands its call to one of them. The engine never mounts
or forks itself: mounts are made by helper processes (``mount(8)`` for image views, the runner for
containers).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbcontainer.engine.core import Core, default_root
from nbcontainer.engine.results import HistoryRow, ImageRow, LayerRow, RemoveResult
from nbcontainer.errors import NotFoundError

if TYPE_CHECKING:
    from nbcontainer.engine.archives import Archives
    from nbcontainer.engine.containers import ContainerRow, Containers
    from nbcontainer.engine.images import Images
    from nbcontainer.engine.networks import AddressRow, NetworkRow, Networks, PortBinding
    from nbcontainer.engine.registry import Registry
    from nbcontainer.layers.diff import DiffRow
    from nbcontainer.runtime import ContainerState, Runtime
    from nbcontainer.snapshot import ContainerLayer, Snapshotter
    from nbcontainer.store import Image, ImageStore
    from nbcontainer.transfer.registry.client import PullResult, RemoteManifest

__all__ = ["Engine", "HistoryRow", "ImageRow", "LayerRow", "RemoveResult", "default_root"]


class Engine:
    """The nbcontainer API over one store root.

    Parameters
    ----------
    root:
        The store root; defaults to :func:`default_root`.
    """

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.core = Core(root)

    # The nouns load on first use: ``nbcontainer images`` needs neither the runtime's nor the
    # registry's modules (measured by benchmarks/bench_cli.py).
    @functools.cached_property
    def _images(self) -> Images:
        from nbcontainer.engine.images import Images

        return Images(self.core)

    @functools.cached_property
    def _networks(self) -> Networks:
        from nbcontainer.engine.networks import Networks

        return Networks(self.core)

    @functools.cached_property
    def _containers(self) -> Containers:
        from nbcontainer.engine.containers import Containers

        return Containers(self.core, self._networks)

    @functools.cached_property
    def _archives(self) -> Archives:
        from nbcontainer.engine.archives import Archives

        return Archives(self.core)

    @functools.cached_property
    def _registry(self) -> Registry:
        from nbcontainer.engine.registry import Registry

        return Registry(self.core)

    def __repr__(self) -> str:
        return f"Engine(root={str(self.root)!r})"

    @property
    def root(self) -> Path:
        return self.core.root

    @property
    def store(self) -> ImageStore:
        return self.core.store

    @property
    def snapshots(self) -> Snapshotter:
        return self.core.snapshots

    @property
    def runtime(self) -> Runtime:
        """The container runtime (root only; made on first use)."""
        return self.core.runtime

    def image(self, ref: str) -> Image:
        """The stored image a name, id or digest refers to."""
        return self.core.image(ref)

    def unpack(self, img: Image, progress: Callable[[int], None] | None = None) -> list[str]:
        """Unpack every layer of ``img`` not yet on disk (each layer once, shared by images)."""
        return self.core.unpack(img, progress)

    def inspect(self, obj: str, *, type: str | None = None) -> dict[str, Any]:
        """``inspect`` of an image or a container (containers first, as Docker does)."""
        if type != "image":
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

    def bootstrap(self, what: str = "busybox", *, tag: str | None = None,
                  progress: Callable[[int], None] | None = None) -> Image:
        """Build a base image without a registry: ``busybox`` or ``debian[:SUITE]``."""
        from nbcontainer.engine.bootstrap import bootstrap

        return bootstrap(self.core, what, tag=tag, progress=progress)

    # -- images ------------------------------------------------------------------------------------

    def images(self, *, all: bool = False) -> list[ImageRow]:
        return self._images.images(all=all)

    def history(self, ref: str) -> list[HistoryRow]:
        """Docker's ``history``: newest first; ``<missing>`` where no local image has that id."""
        return self._images.history(ref)

    def layers(self, ref: str) -> list[LayerRow]:
        """Per layer, bottom first: digest, diff_id, chain_id, size, file count, created_by, dir."""
        return self._images.layers(ref)

    def layer_dirs(self, ref: str) -> list[str]:
        """The unpacked ``diff`` dir of each layer of an image, bottom first."""
        return self._images.layer_dirs(ref)

    def container_layer(self, ref: str) -> ContainerLayer:
        """The overlay dirs of a container: ``lower_dirs`` (top first), ``upper``, ``work``, ``merged``."""
        return self._images.container_layer(ref)

    def files(self, ref: str) -> list:
        """Every entry of every layer with kind (added/modified/whiteout) and who shadows it."""
        return self._images.files(ref)

    def inspect_image(self, ref: str) -> dict[str, Any]:
        """Docker-shaped ``image inspect`` object (the CLI prints a JSON array of these)."""
        return self._images.inspect_image(ref)

    def tag(self, source: str, target: str) -> str:
        return self._images.tag(source, target)

    def rmi(self, ref: str, *, force: bool = False, prune_layers: bool = True) -> RemoveResult:
        """Untag ``ref``; delete the image when it has no name left (``docker rmi``)."""
        return self._images.rmi(ref, force=force, prune_layers=prune_layers)

    def import_(self, tarball: str | os.PathLike, ref: str | None = None, *, message: str = "",
                changes: list[str] | None = None) -> Image:
        """``docker import``: a rootfs tarball (plain, gzip, zstd or xz) becomes a one-layer image."""
        return self._images.import_(tarball, ref, message=message, changes=changes)

    # -- containers --------------------------------------------------------------------------------

    def container(self, ref: str) -> ContainerState:
        """A container's state by name, full id or unique id prefix."""
        return self._containers.container(ref)

    def create(self, image: str, command: list[str] | str | None = None, **opts: Any) -> Any:
        return self._containers.create(image, command, **opts)

    def run(self, image: str, command: list[str] | str | None = None, *, detach: bool = False,
            remove: bool = False, **opts: Any) -> Any:
        """``docker run``. Detached: the container's state. Else a result with exit_code, stdout, stderr."""
        return self._containers.run(image, command, detach=detach, remove=remove, **opts)

    def start(self, ref: str) -> Any:
        return self._containers.start(ref)

    def attach(self, ref: str) -> Any:
        """A socket to the terminal of a container created with ``tty=True, attach=True``."""
        return self._containers.attach(ref)

    def stop(self, ref: str, *, timeout: int = 10) -> Any:
        return self._containers.stop(ref, timeout=timeout)

    def kill(self, ref: str, *, signal: str | int = "KILL") -> Any:
        return self._containers.kill(ref, signal=signal)

    def pause(self, ref: str) -> Any:
        return self._containers.pause(ref)

    def unpause(self, ref: str) -> Any:
        return self._containers.unpause(ref)

    def wait(self, ref: str, *, timeout: float | None = None) -> int:
        return self._containers.wait(ref, timeout=timeout)

    def rm(self, ref: str, *, force: bool = False) -> str:
        return self._containers.rm(ref, force=force)

    def container_prune(self) -> list[str]:
        return self._containers.container_prune()

    def exec(self, ref: str, command: list[str] | str, **opts: Any) -> Any:
        return self._containers.exec(ref, command, **opts)

    def ps(self, *, all: bool = False) -> list[ContainerRow]:
        return self._containers.ps(all=all)

    def logs(self, ref: str, *, tail: int | None = None, follow: bool = False) -> Iterator[tuple[str, bytes]]:
        return self._containers.logs(ref, tail=tail, follow=follow)

    def top(self, ref: str) -> list[dict[str, Any]]:
        return self._containers.top(ref)

    def inspect_container(self, ref: str) -> dict[str, Any]:
        return self._containers.inspect_container(ref)

    def diff(self, ref: str) -> list[DiffRow]:
        """``docker diff``: A/C/D read from the upper dir only; parents of a change are C."""
        return self._containers.diff(ref)

    def commit(self, ref: str, repo: str | None = None, *, message: str = "", author: str = "",
               changes: list[str] | None = None, pause: bool = True, squash: bool = False,
               progress: Callable[[int], None] | None = None) -> Any:
        """``docker commit``: the upper dir becomes one OCI layer over the container's image."""
        return self._containers.commit(ref, repo, message=message, author=author, changes=changes,
                                       pause=pause, squash=squash, progress=progress)

    def export(self, ref: str, out: str | os.PathLike) -> str:
        """``docker export``: the container's flattened rootfs as a tar (no whiteouts)."""
        return self._containers.export(ref, out)

    # -- networks ----------------------------------------------------------------------------------

    # -- networks ----------------------------------------------------------------------------------

    def network_create(self, name: str, *, subnet: str | None = None,
                       bridge: str | None = None) -> NetworkRow:
        """``docker network create NAME [--subnet CIDR]``; ``bridge`` names the Linux bridge."""
        return self._networks.network_create(name, subnet=subnet, bridge=bridge)

    def network_ls(self) -> list[NetworkRow]:
        return self._networks.network_ls()

    def network_inspect(self, name: str) -> dict[str, Any]:
        """Docker's network JSON, with ``Containers`` from the live leases."""
        return self._networks.network_inspect(name)

    def network_rm(self, name: str) -> str:
        """Remove a network no container uses (the default ``bridge`` stays, as in Docker)."""
        return self._networks.network_rm(name)

    def network_prune(self) -> list[str]:
        """Remove unused networks, and release what a crash left: leases of dead containers,
        veths and bridges of this root no lease explains (and their nft rules)."""
        return self._networks.network_prune()

    def port(self, ref: str) -> list[PortBinding]:
        """``docker port CONTAINER``: its published ports while it runs."""
        return self._networks.port(ref)

    def addresses(self) -> list[AddressRow]:
        """Every running container's address on its network."""
        return self._networks.addresses()

    # -- archives and the store --------------------------------------------------------------------

    def save(self, refs: list[str] | str, out: str | os.PathLike, *, format: str = "docker+oci",
             compress: str | None = None, progress: Callable[[int], None] | None = None) -> str:
        """``docker save``: images to one tar (by default both a docker-archive and an OCI layout)."""
        return self._archives.save(refs, out, format=format, compress=compress, progress=progress)

    def load(self, src: str | os.PathLike, *, progress: Callable[[int], None] | None = None) -> list[Any]:
        """``docker load``: every image of an archive or OCI layout dir; layers unpacked and verified."""
        return self._archives.load(src, progress=progress)

    def mount(self, ref: str, target: str | os.PathLike) -> str:
        """Mount a read-only overlay of ``ref`` on ``target`` (as ``mount(8)`` shows it)."""
        return self._archives.mount(ref, target)

    def umount(self, target: str | os.PathLike) -> None:
        return self._archives.umount(target)

    def df(self) -> list[dict[str, Any]]:
        """``system df``: TYPE, TOTAL, ACTIVE, SIZE, RECLAIMABLE (bytes)."""
        return self._archives.df()

    def image_prune(self) -> Any:
        """Remove unnamed images no container uses; a :class:`~nbcontainer.engine.RemoveResult`."""
        return self._archives.image_prune()

    def fsck(self, *, repair: bool = False) -> list[str]:
        return self._archives.fsck(repair=repair)

    # -- registry ----------------------------------------------------------------------------------

    def pull(self, ref: str, *, platform: str | None = None, progress: Any = None,
             insecure: bool = False) -> PullResult:
        """Pull ``ref`` (``NAME[:TAG]`` or ``NAME@DIGEST``), unpack its layers and name it."""
        return self._registry.pull(ref, platform=platform, progress=progress, insecure=insecure)

    def push(self, ref: str, target: str | None = None, *, progress: Any = None,
             insecure: bool = False) -> str:
        """Push image ``ref`` to ``target`` (default: ``ref`` itself); returns the manifest digest."""
        return self._registry.push(ref, target, progress=progress, insecure=insecure)

    def login(self, registry: str, username: str, password: str, *, insecure: bool = False) -> None:
        """Check the credentials against ``registry`` and keep them in Docker's ``config.json``."""
        return self._registry.login(registry, username, password, insecure=insecure)

    def logout(self, registry: str) -> None:
        """Forget the credentials of ``registry``; NotFoundError when there were none."""
        return self._registry.logout(registry)

    def manifest_inspect(self, ref: str, *, platform: str | None = None,
                         insecure: bool = False) -> RemoteManifest:
        """The remote manifest or index of ``ref``, without pulling; ``platform`` picks from an index."""
        return self._registry.manifest_inspect(ref, platform=platform, insecure=insecure)
