"""The shim (one per container) and the exec helper (one per exec), both forked by the runner.

The shim is the parent of the container's PID 1 for the container's whole life, so it, not the
runner, collects the exit status: the runner may die and restart without losing an exit code.
Its life::

    setsid, mount the overlay on merged in the HOST mount namespace (it shows in the host's
    /proc/mounts, as Docker's does) -> unshare(CLONE_NEWPID) -> fork PID 1 (init.container_init)
    -> wait for "ready" on the sync pipe -> network hook -> state.json "created" -> reply to the
    client on the connection the runner handed over -> forward stdio to log.jsonl, feed stdin
    -> PID 1 exits -> OOM count, unmount the overlay, state.json "exited" -> exit.

A failed setup is undone by the shim itself (mount, cgroups, container dir) before it replies with
``RuntimeSetupError``, so nothing is left behind.
"""

from __future__ import annotations

import _thread
import contextlib
import errno
import json
import os
import selectors
import shutil
import signal
import socket
import time

from nbcontainer.errors import RuntimeSetupError
from nbcontainer.runtime import _libc as libc
from nbcontainer.runtime import cgroups, init, network, protocol
from nbcontainer.runtime import state as _state
from nbcontainer.runtime.bundle import Bundle
from nbcontainer.snapshot.overlay import Mount

NS_ORDER = (("ipc", libc.CLONE_NEWIPC), ("uts", libc.CLONE_NEWUTS), ("net", libc.CLONE_NEWNET),
            ("cgroup", libc.CLONE_NEWCGROUP), ("mnt", libc.CLONE_NEWNS))


def _after_fork(keep: set[int]) -> None:
    """Child side of a fork from the runner: default signals, no fd but ``keep`` (and 0-2)."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    low = 3
    for fd in sorted(keep):
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1
    os.closerange(low, 1 << 20)


def spawn(b: Bundle, conn: socket.socket, stdin: bytes | None, seccomp_program: bytes | None) -> int:
    """Fork the shim of ``b`` (called in the runner, which compiled ``seccomp_program``); returns
    its pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        _after_fork({conn.fileno()})
        os.setsid()
        code = Shim(b, conn, stdin, seccomp_program).run()
    except BaseException as err:  # noqa: BLE001 - say why in the runner's log, never unwind
        _log_crash("shim", b.spec.id, err)
    finally:
        os._exit(code)


def _log_crash(what: str, cid: str, err: BaseException) -> None:
    import traceback

    os.write(2, f"{what} of container {cid[:12]} crashed:\n{traceback.format_exc()}".encode())


def mount_rootfs(rootfs: Mount, merged: str) -> None:
    """Mount the snapshot's ``Mount`` on ``merged``; its options may be relative to ``cwd``."""
    if rootfs.type == "bind":
        libc.mount(rootfs.source, merged, None, libc.MS_BIND | libc.MS_REC)
        return
    if rootfs.cwd:
        os.chdir(rootfs.cwd)
    try:
        libc.mount(rootfs.source, merged, rootfs.type, libc.MS_RDONLY if rootfs.readonly else 0, rootfs.data)
    finally:
        os.chdir("/")


def unmount(path: str) -> None:
    try:
        libc.umount2(path, 0)
    except OSError as err:
        if err.errno == errno.EBUSY:
            libc.umount2(path, libc.MNT_DETACH)
        elif err.errno != errno.EINVAL:  # EINVAL: not mounted any more
            raise


class _Pump:
    """Moves bytes between the child's stdio pipes and json-file records (or memory)."""

    def __init__(self, log_fd: int | None) -> None:
        self.sel = selectors.DefaultSelector()
        self.log_fd = log_fd
        self.partial: dict[str, bytes] = {}
        self.captured: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
        self.open = 0
        self.stdin = b""
        self.attached: socket.socket | None = None  # ``run -it``: a terminal relayed by the client

    def add_reader(self, fd: int, stream: str) -> None:
        os.set_blocking(fd, False)
        self.sel.register(fd, selectors.EVENT_READ, stream)
        self.partial[stream] = b""
        self.open += 1

    def add_stdin(self, fd: int, data: bytes) -> None:
        if not data:
            os.close(fd)
            return
        os.set_blocking(fd, False)
        self.stdin = data
        self.sel.register(fd, selectors.EVENT_WRITE, "stdin")

    def _emit(self, stream: str, data: bytes) -> None:
        if self.attached is not None:
            try:
                self.attached.sendall(data)
            except OSError:
                self.detach()
        if self.log_fd is None:
            self.captured[stream].append(data)
            return
        when = _state.now()
        buf = self.partial[stream] + data
        lines = buf.split(b"\n")
        self.partial[stream] = lines.pop()
        out = b"".join(_state.log_record(stream, line + b"\n", when) for line in lines)
        if len(self.partial[stream]) >= 16384:  # json-file splits long lines at 16 KiB too
            out += _state.log_record(stream, self.partial[stream], when)
            self.partial[stream] = b""
        if out:
            try:
                os.write(self.log_fd, out)
            except OSError as err:
                # a full disk loses log lines, never the container's exit code
                if err.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise

    def detach(self) -> None:
        if self.attached is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(self.attached)
            self.attached.close()
            self.attached = None

    def _close(self, fd: int, stream: str) -> None:
        self.sel.unregister(fd)
        os.close(fd)
        if stream == "stdin":
            return
        self.open -= 1
        rest = self.partial.pop(stream, b"")
        if rest and self.log_fd is not None:
            os.write(self.log_fd, _state.log_record(stream, rest, _state.now()))

    def step(self, timeout: float | None) -> list[tuple[object, int]]:
        """Serve ready fds; returns the (data, events) of keys that are not ours."""
        other = []
        for key, _events in self.sel.select(timeout):
            stream = key.data
            if stream == "stdin":
                try:
                    n = os.write(key.fd, self.stdin[:65536])
                except BrokenPipeError:
                    n = len(self.stdin)
                self.stdin = self.stdin[n:]
                if not self.stdin:
                    self._close(key.fd, "stdin")
            elif isinstance(stream, str):
                try:
                    data = os.read(key.fd, 65536)
                except OSError as err:  # EIO: a pty whose slave side is gone
                    if err.errno != errno.EIO:
                        raise
                    data = b""
                if data:
                    self._emit(stream, data)
                else:
                    self._close(key.fd, stream)
            else:
                other.append((stream, key.fd))
        return other


def _stdio(tty: bool, stdin: bytes | None) -> tuple[tuple[int, int, int], list[tuple[int, str]], int | None]:
    """(child's fds 0-2, our reading ends with their stream, our stdin writing end)."""
    if tty:
        master, slave = os.openpty()
        return (slave, slave, slave), [(master, "stdout")], (os.dup(master) if stdin is not None else None)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    if stdin is not None:
        in_r, in_w = os.pipe()
    else:
        in_r, in_w = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC), None
    return (in_r, out_w, err_w), [(out_r, "stdout"), (err_r, "stderr")], in_w


ATTACH = "attach.sock"


def _listen_attach(bundle: str) -> socket.socket:
    """A Unix socket in the bundle for ``run -it``; bound through /proc/self/fd so the path stays
    under the 108-byte sun_path limit however deep the store root is."""
    dfd = os.open(bundle, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        s.bind(f"/proc/self/fd/{dfd}/{ATTACH}")
        os.chmod(os.path.join(bundle, ATTACH), 0o600)
        s.listen(1)
    finally:
        os.close(dfd)
    return s


def _set_winsize(readers: list[tuple[int, str]], size: tuple[int, int]) -> None:
    """The client's terminal size (rows, cols) on the pty, before the process starts."""
    rows, cols = size
    import fcntl
    import struct
    import termios

    master = next(fd for fd, stream in readers if stream == "stdout")
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _read_line(fd: int) -> bytes:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    return buf


def _join_cgroups(procs_files: list[str], pid_r: int, joined_w: int) -> None:
    try:
        pid = int(os.read(pid_r, 32) or b"0")
        os.close(pid_r)
        for path in procs_files if pid else ():
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, str(pid).encode())
            finally:
                os.close(fd)
        if pid:
            os.write(joined_w, b"1")
    except (OSError, ValueError):
        pass  # the child reads EOF and fails its "cgroup" step
    finally:
        os.close(joined_w)


def status_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


class Shim:
    def __init__(self, b: Bundle, conn: socket.socket, stdin: bytes | None,
                 seccomp_program: bytes | None) -> None:
        self.b = b
        self.seccomp_program = seccomp_program
        self.conn = conn
        self.stdin = stdin
        self.bundle = b.path
        self.mounted = False
        self.child = 0
        self.net: object = None
        self.attach_sock: socket.socket | None = None

    def fail(self, step: str, err: int, detail: str) -> int:
        if self.child:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.child, signal.SIGKILL)
            os.waitpid(self.child, 0)
        try:
            network.teardown(self.b)
            if self.mounted:
                unmount(self.b.spec.merged)
            cgroups.remove(self.b.cgroups)
            shutil.rmtree(self.bundle, ignore_errors=True)
        finally:
            protocol.send(self.conn, RuntimeSetupError(step, err, detail))
        return 1

    def run(self) -> int:
        b, spec = self.b, self.b.spec
        try:
            mount_rootfs(spec.rootfs, spec.merged)
        except OSError as err:
            return self.fail("overlay", err.errno or 0, err.strerror or str(err))
        self.mounted = True
        stdio, readers, stdin_w = _stdio(spec.tty, self.stdin)
        sync_r, sync_w = os.pipe()
        joined_r, joined_w = os.pipe()
        pid_r, pid_w = os.pipe()
        # The cgroup move blocks for an RCU grace period on v1 (~10 ms); a thread lets the setup,
        # the reply to the client and ``start`` go on meanwhile (the child waits for it before
        # exec). It must exist before unshare(CLONE_NEWPID), after which clone(CLONE_THREAD)
        # fails; it learns the pid through a pipe and holds no lock across the fork.
        _thread.start_new_thread(_join_cgroups, (b.cgroup_procs, pid_r, joined_w))
        try:
            libc.unshare(libc.CLONE_NEWPID)
        except OSError as err:
            os.close(pid_w)
            return self.fail("unshare", err.errno or 0, err.strerror or str(err))
        pid = os.fork()
        if pid == 0:
            _after_fork({sync_w, joined_r, *stdio})
            init.container_init(b, sync_w, joined_r, stdio, os.path.join(self.bundle, _state.FIFO),
                                self.seccomp_program)
        self.child = pid
        os.write(pid_w, str(pid).encode())
        os.close(pid_w)
        os.close(sync_w)
        os.close(joined_r)
        for fd in set(stdio):
            os.close(fd)
        msg = _read_line(sync_r)
        if msg != b"ready\n":
            try:
                e = json.loads(msg)
            except ValueError:
                e = {"step": "init", "errno": 0, "detail": "the container process died during setup"}
            return self.fail(e["step"], e["errno"], e["detail"])
        try:
            self.net = network.setup(b, pid)
        except OSError as err:
            return self.fail("network", err.errno or 0, err.strerror or str(err))
        state = _state.update(self.bundle, {
            "network": getattr(self.net, "settings", {}),
            "id": spec.id, "pid": pid, "pid_starttime": _state.starttime(pid),
            "shim_pid": os.getpid(), "shim_starttime": _state.starttime(os.getpid()),
            "status": "created", "created": b.created, "started_at": "", "finished_at": "",
            "exit_code": 0, "oom_killed": False,
        })
        if spec.tty and spec.attach:
            self.attach_sock = _listen_attach(self.bundle)
            if spec.tty_size:
                _set_winsize(readers, spec.tty_size)
        # the log exists before anyone hears of the container, so ``logs -f`` never finds it missing
        log_fd = os.open(os.path.join(self.bundle, _state.LOG),
                         os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        protocol.send(self.conn, protocol.Created(state))
        self.conn.close()
        return self.supervise(pid, sync_r, readers, stdin_w, log_fd)

    def supervise(self, pid: int, sync_r: int, readers: list[tuple[int, str]], stdin_w: int | None,
                  log_fd: int) -> int:
        pump = _Pump(log_fd)
        for fd, stream in readers:
            pump.add_reader(fd, stream)
        if stdin_w is not None:
            pump.add_stdin(stdin_w, self.stdin or b"")
        pidfd = os.pidfd_open(pid)
        pump.sel.register(pidfd, selectors.EVENT_READ, ("exit",))
        pump.sel.register(sync_r, selectors.EVENT_READ, ("sync",))
        if getattr(self.net, "proxy", None) is not None:
            self.net.proxy.register(pump.sel)  # type: ignore[attr-defined]  # published ports
        tty_w = -1
        if self.attach_sock is not None:
            tty_w = os.dup(next(fd for fd, stream in readers if stream == "stdout"))
            pump.sel.register(self.attach_sock, selectors.EVENT_READ, ("attach-listen",))
        status = None
        deadline = 0.0
        # After PID 1 is reaped the pid namespace is gone, so the pipes reach EOF at once; the
        # deadline only guards against a writer that escaped (an exec'd process still draining).
        while status is None or (pump.open and time.monotonic() < deadline):
            for data, fd in pump.step(None if status is None else max(0.0, deadline - time.monotonic())):
                if data[0] == "proxy":  # type: ignore[index]
                    data[1]()  # type: ignore[index]
                elif data == ("attach-listen",):
                    conn, _ = self.attach_sock.accept()  # type: ignore[union-attr]
                    conn.settimeout(5)
                    pump.detach()
                    pump.attached = conn
                    pump.sel.register(conn, selectors.EVENT_READ, ("attach-in",))
                elif data == ("attach-in",):
                    try:
                        typed = pump.attached.recv(65536) if pump.attached else b""
                    except OSError:
                        typed = b""
                    if typed and status is None:
                        with contextlib.suppress(OSError):
                            os.write(tty_w, typed)
                    elif not typed:
                        pump.detach()
                elif data == ("sync",):
                    if os.read(fd, 64) == b"":
                        pump.sel.unregister(fd)
                        os.close(fd)
                    else:
                        _state.update(self.bundle, {"status": "running", "started_at": _state.now()})
                elif data == ("exit",):
                    pump.sel.unregister(fd)
                    os.close(fd)
                    status = os.waitpid(pid, 0)[1]
                    deadline = time.monotonic() + 2.0
        pump.detach()
        if self.attach_sock is not None:
            self.attach_sock.close()
            os.close(tty_w)
        self.finish(status)
        return 0

    def finish(self, status: int) -> None:
        code = status_code(status)
        oom = cgroups.oom_kills(self.b.cgroups) > 0
        with contextlib.suppress(OSError):  # delete tries again and reports
            unmount(self.b.spec.merged)
        try:
            network.teardown(self.b)
        except Exception as err:  # noqa: BLE001 - the exit code matters more; delete tries again
            _log_crash("network teardown", self.b.spec.id, err)
        _state.update(self.bundle, {"network": {}, "status": "exited", "pid": 0, "exit_code": code,
                                    "oom_killed": oom, "finished_at": _state.now()})


def spawn_exec(b: Bundle, state: dict, conn: socket.socket, req: protocol.Exec,
               seccomp_program: bytes | None) -> int:
    """Fork the exec helper (called in the runner); returns its pid. The helper replies on ``conn``."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        _after_fork({conn.fileno()})
        code = _exec_helper(b, state, conn, req, seccomp_program)
    except BaseException as err:  # noqa: BLE001
        _log_crash("exec helper", b.spec.id, err)
    finally:
        os._exit(code)


def _exec_helper(b: Bundle, state: dict, conn: socket.socket, req: protocol.Exec,
                 seccomp_program: bytes | None) -> int:
    target = state["pid"]
    # Every namespace and the cgroups are joined HERE, before the fork that makes the exec'd process
    # visible in the container's pid namespace: it never shows there with the host's root, mounts or
    # cgroups (runc's order; a container process could otherwise read the host through
    # /proc/<pid>/root). Non-dumpable until execve, so none of it can be ptraced meanwhile.
    step = "setns"
    try:
        libc.prctl(libc.PR_SET_DUMPABLE, 0)
        pid_ns = os.open(f"/proc/{target}/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        ns_fds = [(os.open(f"/proc/{target}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC), flag)
                  for name, flag in NS_ORDER]
        if _state.starttime(target) != state["pid_starttime"]:
            raise ProcessLookupError(errno.ESRCH, "the container's PID 1 is gone")
        step = "cgroup"
        for path in b.cgroup_procs:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)
        step = "setns"
        for fd, nstype in ns_fds:
            libc.setns(fd, nstype)
            os.close(fd)
        libc.setns(pid_ns, libc.CLONE_NEWPID)
        os.close(pid_ns)
    except OSError as err:
        protocol.send(conn, RuntimeSetupError(step, err.errno or 0, err.strerror or str(err)))
        return 1
    stdio, readers, stdin_w = _stdio(req.tty, req.stdin)
    sync_r, sync_w = os.pipe()
    child = os.fork()
    if child == 0:
        _after_fork({sync_w, *stdio})
        init.exec_init(b, stdio, req.tty, req.args, [*b.spec.env, *req.env],
                       req.cwd or b.spec.cwd, req.user or b.spec.user, sync_w, seccomp_program)
    os.close(sync_w)
    for fd in set(stdio):
        os.close(fd)
    msg = _read_line(sync_r)
    if msg:
        os.waitpid(child, 0)
        e = json.loads(msg)
        protocol.send(conn, RuntimeSetupError(e["step"], e["errno"], e["detail"]))
        return 1
    detach = req.detach
    if detach:
        protocol.send(conn, protocol.Finished(0, child))
        conn.close()
    # Docker discards the output of a detached exec; a non-detached one is sent back whole.
    pump = _Pump(os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC) if detach else None)
    for fd, stream in readers:
        pump.add_reader(fd, stream)
    if stdin_w is not None:
        pump.add_stdin(stdin_w, req.stdin or b"")
    while pump.open:
        pump.step(None)
    code = status_code(os.waitpid(child, 0)[1])
    if not detach:
        protocol.send(conn, protocol.Finished(code, child, b"".join(pump.captured["stdout"]),
                                              b"".join(pump.captured["stderr"])))
    return 0
