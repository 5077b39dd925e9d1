"""The registry, one of the nouns :class:`nbcontainer.Engine` composes: pull, push, login, logout,
manifest_inspect. Each call opens one
:class:`~nbcontainer.transfer.registry.client.RegistryClient` (credentials from Docker's ``config.json``:
``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``) and closes it when done.

A pull unpacks each layer into the snapshotter as soon as it and the layers below it are in the
store, while later layers still download, and names the image only after the last one: an image
that ``pull`` lists can be run at once, and a failed pull lists nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nbcontainer.engine.core import Core
from nbcontainer.oci import ImageConfig, Reference

if TYPE_CHECKING:  # the client (and httpx) load on the first registry call, not with the engine
    from nbcontainer.transfer.registry.client import PullResult, RegistryClient, RemoteManifest


class Registry:
    """The registry verbs over a :class:`~nbcontainer.engine.core.Core`.

    ``progress`` is None (quiet) or a callable taking
    :class:`~nbcontainer.transfer.progress.ProgressEvent` (the faces bring sinks that draw, see
    :mod:`nbcontainer.cli.progress`). ``insecure`` skips
    TLS verification for the registry named by the reference and falls back to plain HTTP, as
    Docker's ``insecure-registries``; loopback registries always use plain HTTP.
    """

    def __init__(self, core: Core) -> None:
        self.core = core

    def pull(self, ref: str, *, platform: str | None = None, progress: Any = None,
             insecure: bool = False) -> PullResult:
        """Pull ``ref`` (``NAME[:TAG]`` or ``NAME@DIGEST``), unpack its layers and name it.

        ``platform`` (``os/arch[/variant]``) picks from a multi-platform index; default the host's.

        Raises
        ------
        RemoteNotFoundError
            Unknown repository, tag or digest, or no manifest for the platform.
        RegistryError
            Registry unreachable (status 0), credentials refused (401), any other bad answer.
        DigestMismatchError
            A blob whose bytes do not match its digest; nothing is named.
        """
        with self._registry(_host(ref) if insecure else None, progress) as client:
            return client.pull(self.core.store, ref, platform=platform, unpack=self._unpack_layer)

    def push(self, ref: str, target: str | None = None, *, progress: Any = None,
             insecure: bool = False) -> str:
        """Push image ``ref`` to ``target`` (default: ``ref`` itself); returns the manifest digest."""
        with self._registry(_host(target or ref) if insecure else None, progress) as client:
            return client.push(self.core.store, ref, target)

    def login(self, registry: str, username: str, password: str, *, insecure: bool = False) -> None:
        """Check the credentials against ``registry`` and keep them in Docker's ``config.json``."""
        with self._registry(registry if insecure else None) as client:
            client.login(registry, username, password)

    def logout(self, registry: str) -> None:
        """Forget the credentials of ``registry``; NotFoundError when there were none."""
        with self._registry() as client:
            client.logout(registry)

    def manifest_inspect(self, ref: str, *, platform: str | None = None,
                         insecure: bool = False) -> RemoteManifest:
        """The remote manifest or index of ``ref``, without pulling; ``platform`` picks from an index."""
        with self._registry(_host(ref) if insecure else None) as client:
            return client.manifest_inspect(ref, platform=platform)

    # -- helpers --------------------------------------------------------------------------

    def _registry(self, insecure: str | None = None, progress: Any = None) -> RegistryClient:
        """A client; ``insecure`` names the one registry to reach without TLS verification."""
        from nbcontainer.transfer.registry.client import RegistryClient

        return RegistryClient(progress=progress, insecure_registries=(insecure,) if insecure else ())

    def _unpack_layer(self, config: ImageConfig, index: int, report: Callable[[int], None]) -> None:
        """Extract layer ``index`` (its blob is stored uncompressed under its diff_id) over its parent."""
        chains = config.chain_ids
        diff_id = config.diff_ids[index]
        self.core.snapshots.unpack_blob(chains[index], chains[index - 1] if index else "", diff_id,
                                   self.core.store.content.path(diff_id), report)


def _host(ref: str) -> str:
    return Reference.parse(ref).registry
