"""The bridge driver: join a container to a network, leave it, sweep what a crash left.

Join (in the shim, PID 1 is ready and not yet running user code), under the root's network lock::

    lease the lowest free address -> leases.json (before any link: a crash leaves a lease to sweep)
    -> bridge up with the gateway (first container; its nft rules and ip_forward with it)
    -> veth: host end on the bridge, peer born as eth0 in the container's netns
    -> /etc/hosts of the container and of its peers on the same network (rewritten in place: the
       file is bind-mounted, a rename would not show inside)
    then, unlocked: address, up and default route inside the netns; the port proxy binds.

Leave (the shim when PID 1 exits; the runner on ``rm`` when the shim is gone; a sweep) releases the
lease, the veth (usually gone with the netns already) and the hosts lines under the lock. The bridge
stays for the next container (see :func:`down_idle`).
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from nbcontainer.runtime import state as _state
from nbcontainer.runtime.net import ipam, nft
from nbcontainer.runtime.net.ports import Proxy, parse

if TYPE_CHECKING:
    from pyroute2 import IPRoute

_HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
_FORWARD = "/proc/sys/net/ipv4/ip_forward"
# Host-wide, like the switch itself (and gone at reboot, when the switch resets too): any store root
# may take the last bridge down and must find the host's value.
_FORWARD_ORIG = "/run/nbcontainer/ip_forward.orig"


@dataclass
class Attachment:
    """What :func:`join` made: the settings for state.json and the port proxy the shim keeps."""

    settings: dict = field(default_factory=dict)
    proxy: Proxy | None = None


def root_of(cfg: dict) -> str:
    return os.path.dirname(os.path.dirname(cfg["bundle"]))


def veth_name(cid: str) -> str:
    return f"nv{cid[:12]}"


def join(cfg: dict, pid: int) -> Attachment:
    from nbcontainer.runtime.net import links

    root = root_of(cfg)
    cid = cfg["id"]
    net = ipam.get(root, cfg["network"])
    publish = [parse(p) for p in json.loads(cfg.get("annotations", {}).get("publish") or "[]")]
    prefix = ipaddress.ip_network(net["Subnet"]).prefixlen
    owner = links.alias(root)
    try:
        with ipam.locked(root):
            table = ipam.leases(root)
            ip = ipam.allocate(table, net)
            lease = {"Network": net["Name"], "NetworkID": net["Id"], "Bridge": net["Bridge"],
                     "Subnet": net["Subnet"], "Gateway": net["Gateway"], "IPAddress": ip,
                     "IPPrefixLen": prefix, "MacAddress": ipam.mac_of(ip), "Veth": veth_name(cid),
                     "Name": cfg["name"], "Hostname": cfg["hostname"], "Pid": pid,
                     "PidStart": _state.starttime(pid), "ShimPid": os.getpid(),
                     "ShimStart": _state.starttime(os.getpid()), "Ports": []}
            table[cid] = lease
            ipam.save_leases(root, table)
            from pyroute2 import IPRoute

            with IPRoute() as ipr:
                if links.ensure_bridge(ipr, net["Bridge"], net["Gateway"], prefix, owner,
                                       adopt=lambda alias: _abandoned(alias, net["Bridge"])):
                    _rules_up(root, net["Bridge"], net["Subnet"])
                links.add_veth(ipr, lease["Veth"], net["Bridge"], pid, lease["MacAddress"], owner)
            _write_hosts(root, table, net["Name"])
        links.configure_inside(pid, ip, prefix, net["Gateway"])
        proxy = Proxy(publish, ip) if publish else None
    except BaseException:
        leave(root, cid)
        raise
    if proxy is not None:
        lease["Ports"] = proxy.bound
        with ipam.locked(root):
            table = ipam.leases(root)
            if cid in table:
                table[cid]["Ports"] = proxy.bound
                ipam.save_leases(root, table)
    return Attachment(settings(lease), proxy)


def settings(lease: dict) -> dict:
    """Docker's NetworkSettings for one lease."""
    ports: dict[str, list[dict]] = {}
    for p in lease.get("Ports", []):
        ports.setdefault(f"{p['ContainerPort']}/{p['Protocol']}", []).append(
            {"HostIp": p["HostIp"], "HostPort": str(p["HostPort"])})
    return {
        "Bridge": lease["Bridge"], "IPAddress": lease["IPAddress"], "IPPrefixLen": lease["IPPrefixLen"],
        "Gateway": lease["Gateway"], "MacAddress": lease["MacAddress"], "Ports": ports,
        "Networks": {lease["Network"]: {
            "NetworkID": lease["NetworkID"], "IPAddress": lease["IPAddress"],
            "IPPrefixLen": lease["IPPrefixLen"], "Gateway": lease["Gateway"],
            "MacAddress": lease["MacAddress"], "Aliases": [lease["Name"], lease["Hostname"]],
        }},
    }


def leave(root: str, cid: str) -> bool:
    """Release the container's veth, lease, hosts lines, and the bridge after the last one.

    Idempotent; True when there was a lease.
    """
    if cid not in ipam.leases(root):
        return False
    from pyroute2 import IPRoute

    from nbcontainer.runtime.net import links

    with ipam.locked(root):
        table = ipam.leases(root)
        lease = table.pop(cid, None)
        if lease is None:
            return False
        with IPRoute() as ipr:
            links.delete(ipr, lease["Veth"])  # usually gone already, with the netns
        ipam.save_leases(root, table)
        _write_hosts(root, table, lease["Network"])
    return True


def down_idle(root: str, only: str | None = None) -> list[str]:
    """Take down this root's bridges (and their nft rules) that no lease uses; names removed.

    Deleting a bridge waits for an RCU grace period (~30 ms) and its rules cost an nft call, so a
    bridge outlives its last container: it goes with ``network rm``/``prune`` or when the runner
    stops (SIGTERM), never while a container has an address on it.
    """
    from pyroute2 import IPRoute

    from nbcontainer.runtime.net import links

    if not os.path.isdir(root):
        return _down_orphaned(root, only)
    known = {n["Bridge"]: n["Subnet"] for n in ipam.networks(root)}
    gone = []
    with ipam.locked(root), IPRoute() as ipr:
        used = {v["Bridge"] for v in ipam.leases(root).values()}
        for name, kind in links.ours(ipr, links.alias(root)):
            if kind == "bridge" and name not in used and only in (None, name):
                _bridge_down(root, ipr, name, known.get(name) or _subnet_of(ipr, name))
                gone.append(name)
    return gone


def _down_orphaned(root: str, only: str | None) -> list[str]:
    """The store root was deleted under us (no networks, leases or lock file to read): the kernel
    still knows its links by their alias ``nbcontainer:<root>`` and each bridge's subnet by its
    gateway address. Take down exactly those (veths first), never another root's."""
    from pyroute2 import IPRoute

    from nbcontainer.runtime.net import links

    gone = []
    with IPRoute() as ipr:
        mine = links.ours(ipr, links.alias(root))
        for name, kind in mine:
            if kind == "veth" and only is None:
                links.delete(ipr, name)
        for name, kind in mine:
            if kind == "bridge" and only in (None, name):
                _bridge_down(root, ipr, name, _subnet_of(ipr, name))
                gone.append(name)
    return gone


def _subnet_of(ipr: IPRoute, bridge: str) -> str:
    """The subnet of a bridge from its gateway address (``0.0.0.0/32`` when it has none)."""
    import socket

    index = ipr.link_lookup(ifname=bridge)
    if index:
        for addr in ipr.get_addr(index=index[0], family=socket.AF_INET):
            ip = addr.get_attr("IFA_ADDRESS")
            if ip:
                return str(ipaddress.ip_network(f"{ip}/{addr['prefixlen']}", strict=False))
    return "0.0.0.0/32"


def _bridge_down(root: str, ipr: IPRoute, bridge: str, subnet: str) -> None:
    from nbcontainer.runtime.net import links

    index = ipr.link_lookup(ifname=bridge)
    if index and links.link_alias(ipr, index[0]) == links.alias(root):
        links.delete(ipr, bridge)
    if nft.available():
        last = not links.any_ours(ipr)
        nft.remove_bridge(bridge, subnet, last=last)
        if last:
            _restore_forward(root)


def _rules_up(root: str, bridge: str, subnet: str) -> None:
    """NAT and isolation for a new bridge, and ip_forward (remembering the host's value)."""
    del root
    if not nft.available():
        return  # no nft binary: containers reach the host and each other, not the outside
    nft.add_bridge(bridge, subnet)
    with open(_FORWARD) as f:
        if f.read().strip() == "1":
            return
    os.makedirs(os.path.dirname(_FORWARD_ORIG), exist_ok=True)
    with open(_FORWARD_ORIG, "w") as f:
        f.write("0\n")
    with open(_FORWARD, "w") as f:
        f.write("1\n")


def _restore_forward(root: str) -> None:
    orig = _FORWARD_ORIG
    try:
        with open(orig) as f:
            value = f.read().strip()
    except FileNotFoundError:
        return
    with open(_FORWARD, "w") as f:
        f.write(value + "\n")
    os.unlink(orig)


def _abandoned(alias: str, bridge: str) -> bool:
    """A bridge left by another store root that no longer has a lease on it may be taken over."""
    from nbcontainer.runtime.net.links import ALIAS

    if not alias.startswith(ALIAS):
        return False
    other = alias[len(ALIAS):]
    return not any(v.get("Bridge") == bridge and _holder_alive(v) for v in ipam.leases(other).values())


def _holder_alive(lease: dict) -> bool:
    return (_state.alive(lease.get("ShimPid", 0), lease.get("ShimStart", 0))
            or _state.alive(lease.get("Pid", 0), lease.get("PidStart", 0)))


def _write_hosts(root: str, table: dict[str, dict], network: str) -> None:
    """Each container of ``network``: localhost, itself, then its peers by name and hostname."""
    members = {cid: v for cid, v in table.items() if v["Network"] == network}
    for cid, own in members.items():
        lines = [_HOSTS, f"{own['IPAddress']}\t{own['Hostname']} {own['Name']}\n"]
        for pid, peer in sorted(members.items(), key=lambda kv: kv[1]["Name"]):
            if pid != cid:
                lines.append(f"{peer['IPAddress']}\t{peer['Name']} {peer['Hostname']}\n")
        path = os.path.join(root, "containers", cid, "hosts")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            os.write(fd, "".join(lines).encode())
        finally:
            os.close(fd)


def sweep(root: str, *, links_too: bool = False) -> list[str]:
    """Release leases whose container is gone (shim and PID 1 dead); ids released.

    ``links_too`` (``network prune``) also deletes links carrying this root's alias that no lease
    explains, e.g. from a crash between making a link and writing the lease.
    """
    gone = [cid for cid, v in ipam.leases(root).items() if not _holder_alive(v)]
    for cid in gone:
        leave(root, cid)
    if links_too:
        from pyroute2 import IPRoute

        from nbcontainer.runtime.net import links

        known = {n["Bridge"]: n["Subnet"] for n in ipam.networks(root)}
        with ipam.locked(root), IPRoute() as ipr:
            table = ipam.leases(root)
            veths = {v["Veth"] for v in table.values()}
            bridges = {v["Bridge"]: v["Subnet"] for v in table.values()}
            for name, kind in links.ours(ipr, links.alias(root)):
                if kind == "bridge" and name not in bridges:
                    _bridge_down(root, ipr, name, known.get(name, "0.0.0.0/32"))
                elif kind == "veth" and name not in veths:
                    links.delete(ipr, name)
    return gone
