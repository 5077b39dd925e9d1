"""Published ports: ``-p [IP:]HOST:CTR[/tcp|udp]`` and the userspace proxy that serves them.

Why a proxy in the shim rather than nftables DNAT: a connection to 127.0.0.1 never passes
PREROUTING, and DNAT from OUTPUT to a bridge address needs ``route_localnet=1`` on the host, a
global switch that also exposes every 127/8 service to the bridge. A proxy (Docker's
``docker-proxy`` does the same for loopback) works for 127.0.0.1 and for any host address, needs no
host setting, and lives exactly as long as the container: the shim owns the listening sockets, so
the port closes when the shim exits, also after a runner crash.
"""

from __future__ import annotations

import contextlib
import ipaddress
import selectors
import socket

from nbcontainer.errors import InvalidArgumentError


def parse(spec: str) -> dict:
    """``[IP:][HOST:]CTR[/proto]`` -> ``{"HostIp", "HostPort", "ContainerPort", "Protocol"}``."""
    rest, _, proto = spec.partition("/")
    proto = proto or "tcp"
    if proto not in ("tcp", "udp"):
        raise InvalidArgumentError(f"invalid publish {spec!r}: protocol must be tcp or udp")
    parts = rest.rsplit(":", 2)
    host_ip, host_port = "0.0.0.0", "0"
    if len(parts) == 3:
        host_ip, host_port, ctr = parts
        host_ip = host_ip.strip("[]") or "0.0.0.0"
    elif len(parts) == 2:
        host_port, ctr = parts
    else:
        ctr = parts[0]
    try:
        ipaddress.IPv4Address(host_ip)
        hp, cp = int(host_port or 0), int(ctr)
    except ValueError:
        raise InvalidArgumentError(f"invalid publish {spec!r}: want [IP:]HOST:CTR[/tcp|udp]") from None
    if not (0 <= hp < 65536 and 0 < cp < 65536):
        raise InvalidArgumentError(f"invalid publish {spec!r}: ports are 1-65535")
    return {"HostIp": host_ip, "HostPort": hp, "ContainerPort": cp, "Protocol": proto}


class Proxy:
    """Listening sockets bound at construction (a busy port fails the container's setup), served
    from the shim's own selector loop.

    The shim cannot start threads: it unshared CLONE_NEWPID, after which clone(CLONE_THREAD) fails.
    So everything is non-blocking and driven by :meth:`register`: each selector key carries
    ``("proxy", callback)`` and the shim calls the callback when the key is ready.
    """

    def __init__(self, ports: list[dict], target: str) -> None:
        self.target = target
        self.sel: selectors.BaseSelector | None = None
        self.bound: list[dict] = []
        self.listeners: list[tuple[socket.socket, dict]] = []
        # one connected upstream socket per (listener, client address) of a UDP port
        self._udp: dict[tuple[str, int, tuple], socket.socket] = {}
        try:
            for p in ports:
                kind = socket.SOCK_STREAM if p["Protocol"] == "tcp" else socket.SOCK_DGRAM
                s = socket.socket(socket.AF_INET, kind)
                self.listeners.append((s, p))
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((p["HostIp"], p["HostPort"]))
                if kind == socket.SOCK_STREAM:
                    s.listen(128)
                s.setblocking(False)
                self.bound.append({**p, "HostPort": s.getsockname()[1]})
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        for s, _ in self.listeners:
            s.close()

    def register(self, sel: selectors.BaseSelector) -> None:
        self.sel = sel
        for s, p in self.listeners:
            call = self._accept if p["Protocol"] == "tcp" else self._datagram
            sel.register(s, selectors.EVENT_READ, ("proxy", lambda s=s, p=p, call=call: call(s, p)))

    def _accept(self, listener: socket.socket, p: dict) -> None:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        try:
            # The container is one hop away on our bridge: it answers or refuses at once.
            upstream = socket.create_connection((self.target, p["ContainerPort"]), timeout=1)
        except OSError:
            client.close()
            return
        assert self.sel is not None
        _Pair(self.sel, client, upstream)

    def _datagram(self, listener: socket.socket, p: dict) -> None:
        try:
            data, client = listener.recvfrom(65535)
        except OSError:
            return
        key = ("udp", listener.fileno(), client)
        up = self._udp.get(key)
        if up is None:
            up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            up.connect((self.target, p["ContainerPort"]))
            up.setblocking(False)
            self._udp[key] = up
            assert self.sel is not None
            self.sel.register(up, selectors.EVENT_READ,
                              ("proxy", lambda: _reply(up, listener, client)))
        with contextlib.suppress(OSError):
            up.send(data)


def _reply(up: socket.socket, listener: socket.socket, client: tuple) -> None:
    with contextlib.suppress(OSError):
        listener.sendto(up.recv(65535), client)


class _Pair:
    """One proxied TCP connection: bytes both ways, half-close passed on, nothing blocks."""

    def __init__(self, sel: selectors.BaseSelector, a: socket.socket, b: socket.socket) -> None:
        self.sel = sel
        self.peer = {a: b, b: a}
        self.out = {a: b"", b: b""}  # bytes waiting to be written TO the socket
        self.eof = {a: False, b: False}  # read EOF FROM the socket
        self.shut = {a: False, b: False}
        self.mask = {a: 0, b: 0}
        for s in (a, b):
            s.setblocking(False)
        self.update()

    def update(self) -> None:
        for s, o in self.peer.items():
            mask = (0 if self.eof[s] or self.out[o] else selectors.EVENT_READ) | \
                (selectors.EVENT_WRITE if self.out[s] else 0)
            if mask == self.mask[s]:
                continue
            if not self.mask[s]:
                self.sel.register(s, mask, ("proxy", self.pump))
            elif not mask:
                self.sel.unregister(s)
            else:
                self.sel.modify(s, mask, ("proxy", self.pump))
            self.mask[s] = mask

    def pump(self) -> None:
        try:
            for s, o in self.peer.items():
                if self.out[s]:
                    with contextlib.suppress(BlockingIOError):
                        self.out[s] = self.out[s][s.send(self.out[s]):]
                if not self.out[s] and self.eof[o] and not self.shut[s]:
                    s.shutdown(socket.SHUT_WR)
                    self.shut[s] = True
                if not self.eof[s] and not self.out[o]:
                    try:
                        data = s.recv(65536)
                    except BlockingIOError:
                        continue
                    if data:
                        self.out[o] = data
                    else:
                        self.eof[s] = True
        except OSError:
            self.close()
            return
        if all(self.shut.values()):
            self.close()
        else:
            self.update()

    def close(self) -> None:
        for s in self.peer:
            if self.mask[s]:
                self.sel.unregister(s)
                self.mask[s] = 0
            s.close()
