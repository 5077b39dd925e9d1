"""Bridges and veths over netlink (pyroute2), never ``ip`` subprocesses.

pyroute2 takes ~125 ms to import here, so only this module imports it, and the runner imports
this module once before it forks shims (:func:`nbcontainer.runtime.network.preload`).
Every link we make carries the alias ``nbcontainer:<root>`` so a sweep can tell ours from the
host's and one store root's from another's.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from nbcontainer.runtime import _libc as libc

ALIAS = "nbcontainer:"


def alias(root: str) -> str:
    return ALIAS + root


def _index(ipr: IPRoute, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    return found[0] if found else 0


def link_alias(ipr: IPRoute, index: int) -> str:
    return ipr.get_links(index)[0].get_attr("IFLA_IFALIAS") or ""


def ensure_bridge(ipr: IPRoute, name: str, gateway: str, prefixlen: int, owner: str,
                  adopt: Callable[[str], bool]) -> bool:
    """Bring up bridge ``name`` with ``gateway``; True when we created (or adopted) it.

    A bridge of that name that is not ours is refused unless ``adopt(its alias)`` says its owner
    is gone, so a test or a second store root never takes over an interface in use.
    """
    index = _index(ipr, name)
    if index:
        found = link_alias(ipr, index)
        if found == owner:
            return False
        if not adopt(found):
            raise OSError(errno.EEXIST, f"interface {name} exists and is not this store's bridge "
                          f"({found or 'no nbcontainer alias'}): use another bridge name")
        ipr.link("set", index=index, ifalias=owner)
        return True
    ipr.link("add", ifname=name, kind="bridge")
    index = _index(ipr, name)
    ipr.link("set", index=index, ifalias=owner)  # the kernel ignores an alias given to "add"
    ipr.addr("add", index=index, address=gateway, prefixlen=prefixlen)
    ipr.link("set", index=index, state="up")
    return True


def delete(ipr: IPRoute, ifname: str) -> bool:
    """Remove a link (a veth takes its peer along); False when it was not there."""
    index = _index(ipr, ifname)
    if not index:
        return False
    try:
        ipr.link("del", index=index)
    except NetlinkError as err:
        if err.code != errno.ENODEV:
            raise
        return False
    return True


def add_veth(ipr: IPRoute, host: str, bridge: str, netns_pid: int, mac: str, owner: str) -> None:
    """The host end ``host`` on ``bridge``; the peer is born as ``eth0`` inside the netns."""
    netns = f"/proc/{netns_pid}/ns/net"
    ipr.link("add", ifname=host, kind="veth", peer={"ifname": "eth0", "net_ns_fd": netns, "address": mac})
    index = _index(ipr, host)
    ipr.link("set", index=index, master=_index(ipr, bridge), state="up", ifalias=owner)


def configure_inside(netns_pid: int, ip: str, prefixlen: int, gateway: str) -> None:
    """Address, up, default route on the container's ``eth0``.

    A netlink socket belongs to the namespace it was opened in: enter the container's netns just
    to open one (this thread only, ~0.1 ms) rather than ``IPRoute(netns=…)``, which costs ~8 ms.
    """
    own = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    target = os.open(f"/proc/{netns_pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        libc.setns(target, libc.CLONE_NEWNET)
        try:
            inner = IPRoute()
        finally:
            libc.setns(own, libc.CLONE_NEWNET)
    finally:
        os.close(own)
        os.close(target)
    with inner:
        index = _index(inner, "eth0")
        inner.addr("add", index=index, address=ip, prefixlen=prefixlen)
        inner.link("set", index=index, state="up")
        inner.route("add", dst="0.0.0.0/0", gateway=gateway)


def ours(ipr: IPRoute, owner: str) -> list[tuple[str, str]]:
    """``(ifname, kind)`` of every link carrying ``owner`` as its alias."""
    out = []
    for link in ipr.get_links():
        if link.get_attr("IFLA_IFALIAS") == owner:
            info = link.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info else ""
            out.append((link.get_attr("IFLA_IFNAME"), kind))
    return out


def any_ours(ipr: IPRoute) -> bool:
    """Is any bridge of any nbcontainer root left on the host?"""
    return any((link.get_attr("IFLA_IFALIAS") or "").startswith(ALIAS) for link in ipr.get_links())
