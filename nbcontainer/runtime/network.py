"""The runtime's network face: the hooks the runner and the shim call, and the networks and leases
the engine reads and changes. The work is in :mod:`.net`.

Modes (``ContainerSpec.network``)::

    none            a fresh netns with only ``lo`` up (done by the child itself)
    host            no network namespace
    container:<id>  the child joins that container's netns (``Bundle.netns_path``, set by the runner)
    <network name>  the bridge driver: ``bridge`` (default, ``nbc0``, 10.89.0.0/16) or one made with
                    ``network create``; the shim calls :func:`setup` once PID 1 reported ready

Networks and leases live in ``root/network/`` (see :mod:`.net.ipam`); reading them imports no
pyroute2, so the Jupyter kernel never loads it unless it removes a bridge (``network rm``, ``prune``).
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os

from nbcontainer.runtime.bundle import Bundle
from nbcontainer.runtime.net import ipam
from nbcontainer.runtime.net.ipam import DEFAULT_NETWORK, exists, leases, networks
from nbcontainer.runtime.net.ports import parse as parse_publish

__all__ = ["DEFAULT_NETWORK", "available", "create", "exists", "get", "is_bridge", "leases", "networks",
           "parse_publish", "preload", "prune", "remove", "setup", "shutdown", "sweep", "teardown"]

DRIVERS = ("none", "host")


def is_bridge(network: str) -> bool:
    return network not in DRIVERS and not network.startswith("container:")


def available() -> bool:
    """Can this host do bridge networking (root, pyroute2, network namespaces)?"""
    return (os.geteuid() == 0 and os.path.exists("/proc/self/ns/net")
            and importlib.util.find_spec("pyroute2") is not None)


# -- networks (the engine) --------------------------------------------------------------------


def get(root: str, name: str) -> dict:
    """The network ``name`` (``{"Name", "Id", "Driver", "Bridge", "Subnet", "Gateway", "Created"}``);
    the default ``bridge`` is written on first use. ``NotFoundError`` for another unknown name."""
    return ipam.get(root, name)


def create(root: str, name: str, *, subnet: str | None = None, bridge: str | None = None) -> dict:
    """A new network; ``bridge`` names its Linux bridge, ``subnet`` defaults to a free /24."""
    return ipam.create(root, name, subnet=subnet, bridge=bridge)


def remove(root: str, name: str) -> None:
    """Forget the network ``name`` and take its bridge (and nft rules) down when this host has one."""
    bridge_name = ipam.get(root, name)["Bridge"]
    if available():
        from nbcontainer.runtime.net import bridge

        bridge.down_idle(root, only=bridge_name)
    ipam.remove(root, name)


def prune(root: str, used: set[str]) -> list[str]:
    """Forget the networks no container uses (``used`` are the networks of the root's containers;
    the default stays) and release what a crash left: leases of dead containers, and the veths and
    bridges of this root that no lease explains (with their nft rules). Names of the networks gone."""
    if available():
        from nbcontainer.runtime.net import bridge

        bridge.sweep(root, links_too=True)
    gone = []
    for n in ipam.networks(root):
        if n["Name"] != DEFAULT_NETWORK and n["Name"] not in used:
            ipam.remove(root, n["Name"])
            gone.append(n["Name"])
    return gone


# -- hooks (the runner and the shim) ----------------------------------------------------------


def preload() -> None:
    """Import pyroute2 (~125 ms) once in the runner, so the shims it forks have it for free."""
    from nbcontainer.runtime.net import bridge, links  # noqa: F401


def _driver_config(b: Bundle) -> dict:
    """The container as :func:`.net.bridge.join` reads it: the mapping of the config.json format
    before :class:`Bundle`, ``publish`` included as its JSON annotation."""
    return {"bundle": b.path, "id": b.spec.id, "name": b.spec.name, "hostname": b.spec.hostname,
            "network": b.spec.network, "annotations": {"publish": json.dumps(b.spec.publish)}}


def setup(b: Bundle, pid: int) -> object:
    """Connect the network namespace of ``pid`` as ``b.spec.network`` asks.

    Returns what the shim keeps for the container's life (settings, the port proxy); ``OSError``
    when a step fails, after undoing the others.
    """
    from nbcontainer.runtime.net.bridge import Attachment

    if not is_bridge(b.spec.network):
        return Attachment()
    from nbcontainer.errors import NbContainerError
    from nbcontainer.runtime.net import bridge

    try:
        return bridge.join(_driver_config(b), pid)
    except NbContainerError as err:
        raise OSError(errno.EINVAL, str(err)) from err
    except OSError:
        raise
    except Exception as err:
        raise OSError(getattr(err, "code", 0) or errno.EIO, f"{type(err).__name__}: {err}") from err


def teardown(b: Bundle) -> None:
    """Release what :func:`setup` made; idempotent (the shim, the runner's delete, a sweep)."""
    if not is_bridge(b.spec.network):
        return
    from nbcontainer.runtime.net import bridge

    bridge.leave(b.root, b.spec.id)


def sweep(root: str) -> list[str]:
    """Release leases of containers whose shim and PID 1 are gone (a new runner calls this)."""
    if not ipam.leases(root):
        return []  # the common case costs no pyroute2 import
    from nbcontainer.runtime.net import bridge

    return bridge.sweep(root)


def shutdown(root: str) -> None:
    """The runner stops: take down the root's bridges that no container uses any more.

    When the root itself was deleted there is nothing to read under it: the root's bridges are
    found in the kernel by their alias (``nbcontainer:<root>``) and all go, with their nft rules.
    """
    if os.path.isdir(root) and not os.path.isdir(os.path.join(ipam.net_dir(root), "networks")):
        return  # this root never made a network: no pyroute2 import
    if not available():
        return
    from nbcontainer.runtime.net import bridge

    bridge.down_idle(root)
