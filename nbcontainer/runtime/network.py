"""Network hooks, called by the runner and the shim; the work is in :mod:`.net`.

Modes (``ContainerSpec.network``)::

    none            a fresh netns with only ``lo`` up (done by the child itself)
    host            no network namespace
    container:<id>  the child joins that container's netns (``cfg["netns_path"]``, set by the runner)
    <network name>  the bridge driver: ``bridge`` (default, ``nbc0``, 10.89.0.0/16) or one made with
                    ``network create``; the shim calls :func:`setup` once PID 1 reported ready
"""

from __future__ import annotations

import errno
import importlib.util
import os

DRIVERS = ("none", "host")


def is_bridge(network: str) -> bool:
    return network not in DRIVERS and not network.startswith("container:")


def available() -> bool:
    """Can this host do bridge networking (root, pyroute2, network namespaces)?"""
    return (os.geteuid() == 0 and os.path.exists("/proc/self/ns/net")
            and importlib.util.find_spec("pyroute2") is not None)


def preload() -> None:
    """Import pyroute2 (~125 ms) once in the runner, so the shims it forks have it for free."""
    from nbcontainer.runtime.net import bridge, links  # noqa: F401


def setup(cfg: dict, pid: int) -> object:
    """Connect the network namespace of ``pid`` as ``cfg["network"]`` asks.

    Returns what the shim keeps for the container's life (settings, the port proxy); ``OSError``
    when a step fails, after undoing the others.
    """
    from nbcontainer.runtime.net.bridge import Attachment

    if not is_bridge(cfg["network"]):
        return Attachment()
    from nbcontainer.errors import NbContainerError
    from nbcontainer.runtime.net import bridge

    try:
        return bridge.join(cfg, pid)
    except NbContainerError as err:
        raise OSError(errno.EINVAL, str(err)) from err
    except OSError:
        raise
    except Exception as err:
        raise OSError(getattr(err, "code", 0) or errno.EIO, f"{type(err).__name__}: {err}") from err


def teardown(cfg: dict) -> None:
    """Release what :func:`setup` made; idempotent (the shim, the runner's delete, a sweep)."""
    if not is_bridge(cfg.get("network", "none")):
        return
    from nbcontainer.runtime.net import bridge

    bridge.leave(bridge.root_of(cfg), cfg["id"])


def sweep(root: str) -> list[str]:
    """Release leases of containers whose shim and PID 1 are gone (a new runner calls this)."""
    from nbcontainer.runtime.net import ipam

    if not ipam.leases(root):
        return []  # the common case costs no pyroute2 import
    from nbcontainer.runtime.net import bridge

    return bridge.sweep(root)


def shutdown(root: str) -> None:
    """The runner stops: take down the root's bridges that no container uses any more."""
    from nbcontainer.runtime.net import ipam

    if not os.path.isdir(os.path.join(ipam.net_dir(root), "networks")) or not available():
        return
    from nbcontainer.runtime.net import bridge

    bridge.down_idle(root)
