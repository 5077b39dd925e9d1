"""Networks, one of the nouns :class:`nbcontainer.Engine` composes: network create/ls/inspect/rm/prune,
port, and the network mode a new container gets.

The engine only reads and writes ``root/network/`` (networks, leases); bridges, veths and nft rules
are made by the shims and removed by them, the runner or :meth:`NetworkVerbs.network_prune` —
the Jupyter kernel never imports pyroute2 unless it prunes.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any

from nbcontainer.engine.core import Core
from nbcontainer.errors import InvalidArgumentError, StateTransitionError


@dataclass(frozen=True)
class NetworkRow:
    """One line of ``network ls``."""

    id: str
    name: str
    driver: str
    bridge: str
    subnet: str
    gateway: str
    containers: int
    created: _dt.datetime | None


@dataclass(frozen=True)
class AddressRow:
    """A container's address on a network (``addresses`` frame)."""

    container: str
    name: str
    network: str
    ip_address: str
    prefix_len: int
    gateway: str
    mac_address: str
    veth: str
    ports: str


@dataclass(frozen=True)
class PortBinding:
    """One line of ``port``: ``80/tcp -> 127.0.0.1:8080``."""

    container_port: int
    protocol: str
    host_ip: str
    host_port: int

    def __str__(self) -> str:
        return f"{self.container_port}/{self.protocol} -> {self.host_ip}:{self.host_port}"


def ports_text(ports: dict) -> str:
    """Docker's PORTS column: ``127.0.0.1:8080->80/tcp``."""
    return ", ".join(f"{b['HostIp']}:{b['HostPort']}->{key}"
                     for key, binds in ports.items() for b in binds or [])


class Networks:
    """The network verbs over a :class:`~nbcontainer.engine.core.Core`."""

    def __init__(self, core: Core) -> None:
        self.core = core

    def network_mode(self, network: str | None, publish: list[str] | None) -> str:
        """What ``run --network`` resolves to: the default, a checked name, or ``container:<id>``."""
        from nbcontainer.runtime import network as _net

        if network is None:
            network = _net.DEFAULT_NETWORK if _net.available() else "none"
        if network.startswith("container:"):
            target = self.core.container(network.split(":", 1)[1])
            if target.status not in ("running", "paused"):
                raise StateTransitionError(
                    f"cannot join the network of container {target.name}: it is not running")
            network = f"container:{target.id}"
        elif _net.is_bridge(network):
            if not _net.available():
                raise InvalidArgumentError(f"network {network!r} needs root and pyroute2; use --network none")
            _net.get(str(self.core.root), network)
        for p in publish or []:
            _net.parse_publish(p)
        if publish and not _net.is_bridge(network):
            raise InvalidArgumentError(f"-p needs a bridge network, not --network {network}")
        return network

    # -- networks ------------------------------------------------------------------------

    def network_create(self, name: str, *, subnet: str | None = None,
                       bridge: str | None = None) -> NetworkRow:
        """``docker network create NAME [--subnet CIDR]``; ``bridge`` names the Linux bridge.

        Creating ``bridge`` before its first use sets the default network's bridge and subnet.
        """
        from nbcontainer.runtime import network as _net

        doc = _net.create(str(self.core.root), name, subnet=subnet, bridge=bridge)
        return self._row(doc, {})

    def network_ls(self) -> list[NetworkRow]:
        from nbcontainer.runtime import network as _net

        table = _net.leases(str(self.core.root))
        return [self._row(n, table) for n in _net.networks(str(self.core.root))]

    def network_inspect(self, name: str) -> dict[str, Any]:
        """Docker's network JSON, with ``Containers`` from the live leases."""
        from nbcontainer.runtime import network as _net

        n = _net.get(str(self.core.root), name)
        containers = {
            cid: {"Name": v["Name"], "EndpointID": v["Veth"], "MacAddress": v["MacAddress"],
                  "IPv4Address": f"{v['IPAddress']}/{v['IPPrefixLen']}", "IPv6Address": ""}
            for cid, v in _net.leases(str(self.core.root)).items() if v["Network"] == n["Name"]
        }
        return {
            "Name": n["Name"], "Id": n["Id"], "Created": n["Created"], "Scope": "local", "Driver": "bridge",
            "EnableIPv6": False, "IPAM": {"Driver": "default", "Config": [{"Subnet": n["Subnet"],
                                                                           "Gateway": n["Gateway"]}]},
            "Internal": False, "Containers": containers,
            "Options": {"com.docker.network.bridge.name": n["Bridge"]},
        }

    def network_rm(self, name: str) -> str:
        """Remove a network no container uses (the default ``bridge`` stays, as in Docker)."""
        from nbcontainer.runtime import network as _net

        if name == _net.DEFAULT_NETWORK:
            raise InvalidArgumentError("bridge is a pre-defined network and cannot be removed")
        _net.get(str(self.core.root), name)
        users = [s.name for s in self.core.runtime.list() if s.spec.network == name]
        if users:
            raise StateTransitionError(f"network {name} is in use by container(s) {', '.join(users)}")
        _net.remove(str(self.core.root), name)
        return name

    def network_prune(self) -> list[str]:
        """Remove unused networks, and release what a crash left: leases of dead containers,
        veths and bridges of this root no lease explains (and their nft rules)."""
        from nbcontainer.runtime import network as _net

        return _net.prune(str(self.core.root), {s.spec.network for s in self.core.runtime.list()})

    # -- containers' addresses -----------------------------------------------------------

    def port(self, ref: str) -> list[PortBinding]:
        """``docker port CONTAINER``: its published ports while it runs."""
        c = self.core.container(ref)
        out = []
        for key, binds in (c.network_settings.get("Ports") or {}).items():
            port, _, proto = key.partition("/")
            out += [PortBinding(int(port), proto, b["HostIp"], int(b["HostPort"])) for b in binds or []]
        return out

    def addresses(self) -> list[AddressRow]:
        """Every running container's address on its network."""
        from nbcontainer.runtime import network as _net

        table = _net.leases(str(self.core.root))
        rows = []
        for cid, v in sorted(table.items(), key=lambda kv: (kv[1]["Network"], kv[1]["Name"])):
            ports = {f"{p['ContainerPort']}/{p['Protocol']}":
                     [{"HostIp": p["HostIp"], "HostPort": p["HostPort"]}] for p in v.get("Ports", [])}
            rows.append(AddressRow(cid, v["Name"], v["Network"], v["IPAddress"], v["IPPrefixLen"],
                                   v["Gateway"], v["MacAddress"], v["Veth"], ports_text(ports)))
        return rows

    def _row(self, n: dict, table: dict) -> NetworkRow:
        from nbcontainer.engine.results import parse_time

        count = sum(1 for v in table.values() if v["Network"] == n["Name"])
        return NetworkRow(n["Id"], n["Name"], n["Driver"], n["Bridge"], n["Subnet"], n["Gateway"], count,
                          parse_time(n["Created"]))
