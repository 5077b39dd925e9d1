"""Networks and address leases of one store root, under ``root/network/`` (no pyroute2 here).

::

    network/lock                 flock held by every change below (shims, runner, engine)
    network/networks/<name>.json {"Name", "Id", "Driver", "Bridge", "Subnet", "Gateway", "Created"}
    network/leases.json          {"<container id>": {"Network", "IPAddress", "MacAddress", "Veth",
                                                     "Name", "Hostname", "Ports"}}

The default network ``bridge`` (bridge ``nbc0``, 10.89.0.0/16; podman owns 10.88 here) is written
on first use unless someone created it before with another bridge name or subnet; when another
store root on the host already has ``nbc0``, this root's default gets its own bridge and /16.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import secrets
import time
from collections.abc import Iterator

from nbcontainer.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError

DEFAULT_NETWORK = "bridge"
DEFAULT_BRIDGE = "nbc0"
DEFAULT_SUBNET = "10.89.0.0/16"
RESERVED = ("none", "host")
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$")
_IFNAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,14}$")
# Subnets we never hand out: podman's default and anything the host routes already.
_AVOID = (ipaddress.ip_network("10.88.0.0/16"),)


def net_dir(root: str) -> str:
    return os.path.join(root, "network")


@contextlib.contextmanager
def locked(root: str) -> Iterator[None]:
    """The root's network lock: leases, hosts files, bridges and nft rules change under it."""
    os.makedirs(os.path.join(net_dir(root), "networks"), exist_ok=True)
    fd = os.open(os.path.join(net_dir(root), "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_json(path: str, obj: object) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# -- networks -------------------------------------------------------------------------------


def _net_path(root: str, name: str) -> str:
    return os.path.join(net_dir(root), "networks", f"{name}.json")


def get(root: str, name: str) -> dict:
    """The network ``name``; the default ``bridge`` is created on first use."""
    try:
        with open(_net_path(root, name)) as f:
            return json.load(f)
    except FileNotFoundError:
        if name != DEFAULT_NETWORK:
            raise NotFoundError(f"network {name} not found") from None
    with locked(root):
        if not os.path.exists(_net_path(root, name)):
            _create_default(root)
    with open(_net_path(root, name)) as f:
        return json.load(f)


def _create_default(root: str) -> dict:
    """``nbc0`` on 10.89.0.0/16, unless another store root on this host has it already: then a
    bridge named after this root on the next free /16 (10.90-10.199), so two roots can run at once."""
    if not os.path.exists(f"/sys/class/net/{DEFAULT_BRIDGE}"):
        try:
            return _create(root, DEFAULT_NETWORK, DEFAULT_SUBNET, DEFAULT_BRIDGE)
        except (InvalidArgumentError, AlreadyExistsError):
            pass
    import hashlib

    tag = hashlib.sha256(os.path.realpath(root).encode()).hexdigest()[:8]
    return _create(root, DEFAULT_NETWORK, None, f"nbc{tag}")


def exists(root: str, name: str) -> bool:
    return name == DEFAULT_NETWORK or os.path.exists(_net_path(root, name))


def networks(root: str) -> list[dict]:
    """Every network of the root (the default one first, created if missing)."""
    get(root, DEFAULT_NETWORK)
    out = []
    folder = os.path.join(net_dir(root), "networks")
    for entry in sorted(os.listdir(folder)):
        if entry.endswith(".json"):
            with open(os.path.join(folder, entry)) as f:
                out.append(json.load(f))
    out.sort(key=lambda n: (n["Name"] != DEFAULT_NETWORK, n["Name"]))
    return out


def create(root: str, name: str, *, subnet: str | None = None, bridge: str | None = None) -> dict:
    """Write a new network; the bridge itself appears with its first container."""
    if not _NAME.match(name) or name in RESERVED or name.startswith("container:"):
        raise InvalidArgumentError(f"invalid network name {name!r}")
    with locked(root):
        if os.path.exists(_net_path(root, name)):
            raise AlreadyExistsError(f"network with name {name} already exists")
        return _create(root, name, subnet, bridge)


def _create(root: str, name: str, subnet: str | None, bridge: str | None) -> dict:
    others = []
    folder = os.path.join(net_dir(root), "networks")
    for entry in os.listdir(folder):
        if entry.endswith(".json"):
            with open(os.path.join(folder, entry)) as f:
                others.append(json.load(f))
    nid = secrets.token_hex(32)
    bridge = bridge or (DEFAULT_BRIDGE if name == DEFAULT_NETWORK else f"nbc{nid[:12]}")
    if not _IFNAME.match(bridge):
        raise InvalidArgumentError(f"invalid bridge name {bridge!r}: at most 15 of [a-zA-Z0-9_.-]")
    if any(o["Bridge"] == bridge for o in others):
        raise AlreadyExistsError(f"bridge {bridge} is already used by another network")
    mine = {o["Bridge"] for o in others}
    taken = [ipaddress.ip_network(o["Subnet"]) for o in others] + list(_AVOID) + host_routes(mine)
    net: ipaddress.IPv4Network | ipaddress.IPv6Network | None
    if subnet:
        try:
            net = ipaddress.ip_network(subnet, strict=True)
        except ValueError as err:
            raise InvalidArgumentError(f"invalid subnet {subnet!r}: {err}") from None
        if net.version != 4 or net.prefixlen > 30:
            raise InvalidArgumentError(f"invalid subnet {subnet!r}: want an IPv4 CIDR of /30 or wider")
        clash = next((t for t in taken if t.overlaps(net)), None)
        if clash is not None:
            raise InvalidArgumentError(f"subnet {subnet} overlaps {clash} (in use on this host)")
    else:
        net = next((c for c in (ipaddress.ip_network(f"10.{i}.0.0/16") for i in range(90, 200))
                    if not any(t.overlaps(c) for t in taken)), None)
        if net is None:
            raise InvalidArgumentError("no free subnet left in 10.90-10.199: pass --subnet")
    doc = {"Name": name, "Id": nid, "Driver": "bridge", "Bridge": bridge, "Subnet": str(net),
           "Gateway": str(net.network_address + 1), "Created": _now()}
    _write_json(_net_path(root, name), doc)
    return doc


def remove(root: str, name: str) -> None:
    """Forget the network (callers check it is unused and take the bridge down)."""
    try:
        os.unlink(_net_path(root, name))
    except FileNotFoundError:
        raise NotFoundError(f"network {name} not found") from None


def host_routes(skip: set[str]) -> list[ipaddress.IPv4Network]:
    """IPv4 routes of the host but those via ``skip`` (``/proc/net/route``, no netlink needed)."""
    out: list[ipaddress.IPv4Network] = []
    try:
        with open("/proc/net/route") as f:
            rows = f.read().splitlines()[1:]
    except FileNotFoundError:
        return out
    for row in rows:
        cols = row.split()
        if len(cols) < 8 or cols[0] in skip:
            continue
        dst, mask = int(cols[1], 16), int(cols[7], 16)
        if mask == 0:
            continue  # the default route overlaps everything
        addr = ipaddress.IPv4Address(dst.to_bytes(4, "little"))
        prefix = mask.bit_count()
        out.append(ipaddress.IPv4Network(f"{addr}/{prefix}", strict=False))
    return out


# -- leases ---------------------------------------------------------------------------------


def _lease_path(root: str) -> str:
    return os.path.join(net_dir(root), "leases.json")


def leases(root: str) -> dict[str, dict]:
    """Container id -> lease (read without the lock: the file is replaced atomically)."""
    try:
        with open(_lease_path(root)) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


def save_leases(root: str, table: dict[str, dict]) -> None:
    """Call with :func:`locked` held."""
    _write_json(_lease_path(root), table)


def allocate(table: dict[str, dict], net: dict) -> str:
    """The lowest free address of ``net`` (not the gateway); call with :func:`locked` held."""
    used = {v["IPAddress"] for v in table.values() if v["Network"] == net["Name"]}
    used.add(net["Gateway"])
    for ip in ipaddress.ip_network(net["Subnet"]).hosts():
        if str(ip) not in used:
            return str(ip)
    raise InvalidArgumentError(f"network {net['Name']} ({net['Subnet']}) has no free address left")


def mac_of(ip: str) -> str:
    """Docker's scheme: 02:42 and the four bytes of the address."""
    return "02:42:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(ip).packed)
