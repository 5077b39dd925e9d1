"""The runner: one small, long-lived, single-threaded process per store root.

Started by the first :class:`~nbcontainer.runtime.client.Runtime` call that finds no socket
(``python -m nbcontainer.runtime.runner ROOT``, new session). It holds ``run/runner.lock`` for its
whole life (a second runner exits at once), listens on ``run/runner.sock`` and is the only process
of nbcontainer that forks shims. It is a child subreaper, so shims and exec helpers whose parent
died are reaped here while it lives (and by the host's init after).

It speaks :mod:`.protocol` (one JSON request line per connection, one reply line). ``create`` and
``exec`` hand the connection to the forked shim or exec helper, which replies, so a long exec never
blocks the loop. The loop itself only does short file-system work.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import selectors
import shutil
import signal
import socket
import sys
import time

from nbcontainer.errors import (
    AlreadyExistsError,
    InvalidArgumentError,
    NbContainerError,
    NotFoundError,
    RuntimeSetupError,
    StateTransitionError,
)
from nbcontainer.runtime import _libc as libc
from nbcontainer.runtime import caps, cgroups, devices, names, network, protocol, seccomp, shim
from nbcontainer.runtime import state as _state
from nbcontainer.runtime.bundle import Bundle, ContainerSpec
from nbcontainer.runtime.protocol import Create, Delete, Exec, Ping

_HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


class Runner:
    def __init__(self, root: str) -> None:
        self.root = root
        self.containers = os.path.join(root, "containers")
        self.run_dir = os.path.join(root, "run")
        self.names: dict[str, str] = {}  # id -> name cache for the name-in-use check
        self.sel = selectors.DefaultSelector()
        self.buffers: dict[int, bytes] = {}
        self.shims: dict[int, str] = {}  # pid of a shim we forked -> its bundle
        self.orphans: dict[int, str] = {}  # pid of a PID 1 we adopted when its shim died -> bundle
        self.unclaimed: dict[int, int] = {}  # pid -> status reaped in the last batch, not a shim's

    # -- loop ------------------------------------------------------------------------------

    def serve(self) -> None:
        os.makedirs(self.containers, exist_ok=True)
        os.makedirs(self.run_dir, exist_ok=True)
        lock = os.open(os.path.join(self.run_dir, "runner.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                       0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # another runner serves this root
        libc.prctl(libc.PR_SET_CHILD_SUBREAPER, 1)
        try:
            network.sweep(self.root)  # leases of containers that died while no runner watched
        except Exception as err:  # noqa: BLE001 - serving matters more; network prune retries
            print(f"runner: network sweep failed: {err}", file=sys.stderr)
        path = os.path.join(self.run_dir, "runner.sock")
        tmp = f"{path}.{os.getpid()}"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(tmp)
        os.chmod(tmp, 0o600)
        listener.listen(256)
        os.replace(tmp, path)  # clients never see a socket that does not accept yet
        with open(os.path.join(self.run_dir, "runner.pid.tmp"), "w") as f:
            f.write(f"{os.getpid()}\n")
        os.replace(os.path.join(self.run_dir, "runner.pid.tmp"), os.path.join(self.run_dir, "runner.pid"))
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        os.set_blocking(wake_r, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, self.stop)
        self.sel.register(listener, selectors.EVENT_READ, "accept")
        self.sel.register(wake_r, selectors.EVENT_READ, "wake")
        while True:
            for key, _ in self.sel.select():
                if key.data == "accept":
                    conn, _ = listener.accept()
                    conn.setblocking(False)
                    self.buffers[conn.fileno()] = b""
                    self.sel.register(conn, selectors.EVENT_READ, "conn")
                elif key.data == "wake":
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 4096)
                    self.reap()
                else:
                    self.read(key.fileobj)  # type: ignore[arg-type]

    def stop(self, *_: object) -> None:
        """SIGTERM: leave no idle bridge or nft rule of this root on the host, then exit."""
        try:
            network.shutdown(self.root)
        finally:
            os._exit(0)

    def reap(self) -> None:
        """Reap our children; a shim that died before its container did leaves the container's
        PID 1 to us (we are the subreaper): mark the monitor lost, and record that PID 1's real
        exit status when we reap it."""
        reaped: dict[int, int] = {}
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            reaped[pid] = status
        # The kernel hands PID 1 over before its shim turns zombie, so PID 1 may be reaped one
        # batch before its shim: keep the previous batch's unknown pids for that.
        earlier, self.unclaimed = self.unclaimed, {}
        for pid in list(reaped):
            bundle = self.shims.pop(pid, "")
            if bundle:
                del reaped[pid]
                lost = _state.mark_monitor_lost(bundle)
                if lost.get("monitor_lost") and not lost.get("finished_at") and lost.get("pid"):
                    self.orphans[lost["pid"]] = bundle
        for pid, status in reaped.items():
            bundle = self.orphans.pop(pid, "")
            if bundle:
                _state.record_lost_exit(bundle, shim.status_code(status))
            else:
                self.unclaimed[pid] = status  # an exec helper, or a PID 1 whose shim we reap next
        for pid, status in earlier.items():
            if pid in self.orphans and not os.path.exists(f"/proc/{pid}"):
                _state.record_lost_exit(self.orphans.pop(pid), shim.status_code(status))

    def read(self, conn: socket.socket) -> None:
        fd = conn.fileno()
        try:
            chunk = conn.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        buf = self.buffers[fd] + chunk
        if chunk and b"\n" not in buf:
            self.buffers[fd] = buf
            return
        self.sel.unregister(conn)
        del self.buffers[fd]
        if not chunk and not buf:
            conn.close()
            return
        conn.setblocking(True)
        try:
            self.handle(conn, protocol.decode_request(buf.split(b"\n", 1)[0]))
        except NbContainerError as err:
            protocol.send(conn, err)
        except Exception as err:  # noqa: BLE001 - the loop must outlive one bad request
            protocol.send(conn, NbContainerError(f"runner: {type(err).__name__}: {err}"))
        # When a forked shim or exec helper got the connection it answers; our copy just closes.
        conn.close()

    def handle(self, conn: socket.socket, req: protocol.Request) -> None:
        if isinstance(req, Ping):
            protocol.send(conn, protocol.Pong(os.getpid()))
        elif isinstance(req, Create):
            self.create(conn, req)
        elif isinstance(req, Delete):
            self.delete(req.id, req.force)
            protocol.send(conn, protocol.Done())
        elif isinstance(req, Exec):
            b, state = self.load(req.id)
            shim.spawn_exec(b, state, conn, req, _seccomp_program(b.spec))

    # -- verbs -----------------------------------------------------------------------------

    def name_owner(self, name: str) -> str:
        ids = set(os.listdir(self.containers))
        for gone in set(self.names) - ids:
            del self.names[gone]
        for cid in ids - set(self.names):
            try:
                self.names[cid] = _state.read_json(os.path.join(self.containers, cid, _state.CONFIG))["name"]
            except (FileNotFoundError, NotADirectoryError, ValueError, KeyError):
                continue
        return next((cid for cid, n in self.names.items() if n == name), "")

    def create(self, conn: socket.socket, req: Create) -> None:
        spec = req.spec
        owner = self.name_owner(spec.name)
        if not spec.name:
            # chosen here, where no other create can interleave: parallel runs never collide
            spec.name = names.generate(set(self.names.values()))
        elif owner:
            raise AlreadyExistsError(
                f"container name {spec.name!r} is already in use by container {owner[:12]}")
        cid, name = spec.id, spec.name
        bundle = os.path.join(self.containers, cid)
        try:
            os.mkdir(bundle, 0o710)  # as Docker's: private, the group may traverse
        except FileExistsError:
            raise AlreadyExistsError(f"container {cid[:12]} already exists") from None
        try:
            groups = cgroups.paths(cid)
            peer = spec.network.split(":", 1)[1] if spec.network.startswith("container:") else ""
            b = Bundle(spec, bundle, _state.now(), groups,
                       # Docker's default: a private cgroup namespace on v2, the host's on v1 and hybrid.
                       cgroupns="private" if list(groups) == ["unified"] else "host",
                       netns_path=self.netns_of(peer) if peer else "")
            _write(os.path.join(bundle, "hostname"), spec.hostname + "\n")
            if network.is_bridge(spec.network):
                network.preload()
            if peer:
                shutil.copyfile(os.path.join(self.containers, peer, "hosts"), os.path.join(bundle, "hosts"))
            elif spec.network == "host":
                shutil.copyfile("/etc/hosts", os.path.join(bundle, "hosts"))
            else:
                _write(os.path.join(bundle, "hosts"), _HOSTS)
            try:
                shutil.copyfile("/etc/resolv.conf", os.path.join(bundle, "resolv.conf"))
            except FileNotFoundError:
                _write(os.path.join(bundle, "resolv.conf"), "")
            for stub in ("hostname", "hosts", "resolv.conf"):
                os.chmod(os.path.join(bundle, stub), 0o644)  # bind-mounted: readable by any user inside
            fifo = os.path.join(bundle, _state.FIFO)
            os.mkfifo(fifo)
            os.chmod(fifo, 0o622)  # any container user may open it for writing (umask would not)
            # atomic: listers read it concurrently
            _state.write_json(os.path.join(bundle, _state.CONFIG), b.to_json())
            _state.reserve_space(bundle)
            program = _seccomp_program(spec)
            rules = [devices.DeviceRule(d.type, d.major, d.minor, d.access, True) for d in spec.devices]
            try:
                cgroups.create(groups, memory=spec.memory, pids=spec.pids_limit, cpus=spec.cpus,
                               devices=devices.rules_for(rules))
            except OSError as err:
                protocol.send(conn, RuntimeSetupError("cgroup", err.errno or 0, err.strerror or str(err)))
                shutil.rmtree(bundle, ignore_errors=True)
                return
        except BaseException:
            shutil.rmtree(bundle, ignore_errors=True)
            raise
        self.names[cid] = name
        self.shims[shim.spawn(b, conn, req.stdin, program)] = bundle

    def netns_of(self, cid: str) -> str:
        """``/proc/<pid>/ns/net`` of a running container, for ``--network container:<id>``."""
        b, state = self.load(cid)
        if _state.status(b.path, state, b.cgroups) not in ("running", "created"):
            raise StateTransitionError(
                f"cannot join the network of container {b.spec.name}: it is not running")
        return f"/proc/{state['pid']}/ns/net"

    def load(self, cid: str) -> tuple[Bundle, dict]:
        bundle = os.path.join(self.containers, cid)
        try:
            b = Bundle.from_json(_state.read_json(os.path.join(bundle, _state.CONFIG)))
        except FileNotFoundError:
            raise NotFoundError(f"container {cid!r} not found") from None
        try:
            state = _state.read_json(os.path.join(bundle, _state.STATE))
        except FileNotFoundError:
            state = {}
        return b, state

    def delete(self, cid: str, force: bool) -> None:
        b, state = self.load(cid)
        bundle, name = b.path, b.spec.name
        status = _state.status(bundle, state, b.cgroups)
        if status in ("running", "paused") and not force:
            raise StateTransitionError(f"cannot remove {status} container {name}: stop it or use -f")
        pid = state.get("pid", 0)
        if status != "exited":
            # Every process of the container, also when the shim died before recording a pid
            # (never kill(0): that is our own process group).
            for victim in {pid, *cgroups.procs(b.cgroups)}:
                if victim > 0:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(victim, signal.SIGKILL)
            if status == "paused":
                cgroups.freeze(b.cgroups, False)  # a frozen task only dies once thawed
        _wait_gone(state.get("shim_pid", 0), state.get("shim_starttime", 0), timeout=10.0)
        if status != "exited":  # no shim waited for it when the shim was gone (its monitor lost)
            _wait_gone(pid, state.get("pid_starttime", 0), timeout=10.0)
        network.teardown(b)  # the shim did it unless it died first
        if os.path.ismount(b.spec.merged):
            shim.unmount(b.spec.merged)
        try:
            cgroups.remove(b.cgroups)
        except OSError as err:
            raise StateTransitionError(
                f"cannot remove container {name}: cgroup still busy: {err}"
            ) from err
        trash = os.path.join(self.containers, f".rm-{cid}")
        os.replace(bundle, trash)
        shutil.rmtree(trash, ignore_errors=True)
        self.names.pop(cid, None)


def _wait_gone(pid: int, start: int, *, timeout: float) -> None:
    """Wait until the shim has finished (it unmounts and records the exit code on its way out)."""
    if not _state.alive(pid, start):
        return
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while _state.alive(pid, start) and time.monotonic() < deadline:
            sel.select(max(0.0, deadline - time.monotonic()))
        sel.close()
    finally:
        os.close(fd)


def _seccomp_program(spec: ContainerSpec) -> bytes | None:
    """The container's compiled seccomp filter (cached by profile and capabilities in this process)."""
    try:
        return seccomp.program_for(spec.seccomp or "default",
                                   caps.container_mask(spec.cap_add, spec.cap_drop))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InvalidArgumentError(f"container {spec.name}: cannot build its seccomp filter: {err}") from err


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m nbcontainer.runtime.runner ROOT", file=sys.stderr)
        return 2
    try:
        Runner(os.path.abspath(argv[1])).serve()
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            return 0
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
