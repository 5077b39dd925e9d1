"""Network verbs: ``network create|ls|inspect|rm|prune|addresses`` and ``port``."""

from __future__ import annotations

import argparse
from typing import Any

from nbcontainer.analysis import units as D
from nbcontainer.errors import InvalidArgumentError
from nbcontainer.verbs.grammar import Result, verb

_ACTIONS = ("create", "ls", "inspect", "rm", "prune", "addresses")


@verb("network", "manage networks: create NAME [--subnet CIDR] [--bridge IFNAME] | ls | inspect NAME | "
      "rm NAME | prune | addresses")
def _network_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=_ACTIONS)
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--subnet", help="IPv4 CIDR (default: a free 10.x.0.0/16)")
    p.add_argument("--bridge", help="name of the Linux bridge (default nbc<id>)")
    p.add_argument("-q", "--quiet", action="store_true")


@_network_args
def network(engine: Any, a: argparse.Namespace) -> Result:
    if a.action in ("create", "inspect", "rm") and not a.names:
        raise InvalidArgumentError(f"network {a.action}: a network name is required")
    if a.action == "create":
        if len(a.names) != 1:
            raise InvalidArgumentError("network create takes exactly one name")
        row = engine.network_create(a.names[0], subnet=a.subnet, bridge=a.bridge)
        return Result(row, "lines", lines=[row.id])
    if a.action == "inspect":
        return Result([engine.network_inspect(n) for n in a.names], "json")
    if a.action == "rm":
        return Result([engine.network_rm(n) for n in a.names], "lines", lines=list(a.names))
    if a.action == "prune":
        gone = engine.network_prune()
        return Result(gone, "lines", lines=["Deleted Networks:", *gone] if gone else [])
    if a.action == "addresses":
        rows = engine.addresses()
        return Result(rows, columns=["CONTAINER ID", "NAME", "NETWORK", "IP ADDRESS", "MAC ADDRESS", "PORTS"],
                      rows=[[r.container[:12], r.name, r.network, f"{r.ip_address}/{r.prefix_len}",
                             r.mac_address, r.ports] for r in rows], frame="addresses")
    rows = engine.network_ls()
    if a.quiet:
        return Result(rows, "lines", lines=[r.id[:12] for r in rows])
    return Result(rows, columns=["NETWORK ID", "NAME", "DRIVER", "BRIDGE", "SUBNET", "CONTAINERS", "CREATED"],
                  rows=[[r.id[:12], r.name, r.driver, r.bridge, r.subnet, str(r.containers),
                         D.since(r.created)] for r in rows], frame="networks")


@verb("port", "list a container's published ports")
def _port_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("container")


@_port_args
def port(engine: Any, a: argparse.Namespace) -> Result:
    rows = engine.port(a.container)
    return Result(rows, "lines", lines=[str(r) for r in rows])
