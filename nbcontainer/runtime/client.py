"""``Runtime``: the container lifecycle as seen from the caller (a Jupyter kernel, the CLI).

The caller never forks, unshares, setns's or mounts. What needs a new process or a mount goes to
the runner over ``root/run/runner.sock`` (create, exec, delete); what is only reading files or
writing a cgroup file happens here (state, start through ``exec.fifo``, kill, pause, wait on the
shim's pidfd, logs, top).
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import fcntl
import json
import os
import pwd
import re
import select
import signal as _signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from nbcontainer.errors import InvalidArgumentError, NotFoundError, RuntimeSetupError, StateTransitionError
from nbcontainer.runtime import caps, cgroups, network, protocol
from nbcontainer.runtime import state as _state
from nbcontainer.runtime.bundle import Bundle, ContainerSpec, ContainerState, RunResult

_ID = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_MIN_MEMORY = 6 * 1024 * 1024  # Docker's floor


class Runtime:
    """Containers of one store root: ``root/containers/<id>/`` and the runner of ``root/run/``."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).absolute()
        self.containers_dir = self.root / "containers"
        self.run_dir = self.root / "run"
        self.containers_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.socket_path = str(self.run_dir / "runner.sock")

    # -- the runner --------------------------------------------------------------------------

    def _connect(self) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(self.socket_path)
            return s
        except (FileNotFoundError, ConnectionRefusedError):
            s.close()
        self._start_runner()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.socket_path)
        return s

    def _start_runner(self) -> None:
        """Start the runner unless someone else did; the spawn lock keeps it to one."""
        fd = os.open(self.run_dir / "spawn.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if self._accepts():
                return
            with open(self.run_dir / "runner.log", "ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "nbcontainer.runtime.runner", str(self.root)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, close_fds=True,
                    start_new_session=True, cwd="/", env=_runner_env(),
                )
            deadline = time.monotonic() + 15
            while not self._accepts():
                if proc.poll() is not None and not self._accepts():
                    raise RuntimeSetupError("runner", 0, f"the runner exited with {proc.returncode}; "
                                            f"see {self.run_dir / 'runner.log'}")
                if time.monotonic() > deadline:
                    raise RuntimeSetupError("runner", 0, f"the runner did not listen on {self.socket_path}")
                time.sleep(0.002)
            # The runner is not our child to wait for; Popen would warn about it in __del__.
            proc.returncode = 0
        finally:
            os.close(fd)

    def _accepts(self) -> bool:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(self.socket_path)
            return True
        except (FileNotFoundError, ConnectionRefusedError):
            return False
        finally:
            s.close()

    def _request(self, req: protocol.Request) -> protocol.Reply:
        with self._connect() as s:
            s.sendall(protocol.encode(req))
            line = protocol.recv_line(s)
        return protocol.decode_reply(line, req)

    def runner_pid(self) -> int:
        """Pid of the runner serving this root (starts it when none runs)."""
        reply = self._request(protocol.Ping())
        assert isinstance(reply, protocol.Pong)
        return reply.pid

    # -- lifecycle ---------------------------------------------------------------------------

    def create(self, spec: ContainerSpec) -> ContainerState:
        """Set the container up to the last step before execve; its PID 1 waits for :meth:`start`.

        Raises
        ------
        InvalidArgumentError
            a bad id, name, volume, capability, network or limit (nothing is created).
        AlreadyExistsError
            the name is in use (nothing is created).
        RuntimeSetupError
            a setup step failed; ``step`` names it and nothing is left behind.
        """
        self._create(spec)
        return self.state(spec.id)

    def _create(self, spec: ContainerSpec) -> None:
        _validate(spec, str(self.root))
        if not spec.hostname:
            hostname = socket.gethostname() if spec.network == "host" else spec.id[:12]
            spec = dataclasses.replace(spec, hostname=hostname)
        self._request(protocol.Create(spec, spec.stdin))

    def attach(self, id: str, *, timeout: float = 2.0) -> socket.socket:
        """Connect to the terminal of a container created with ``tty`` and ``attach`` (``run -it``):
        bytes sent go to its pty, its output comes back."""
        _, b = self._config(id)
        dfd = os.open(b.path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        deadline = time.monotonic() + timeout
        try:
            while True:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.connect(f"/proc/self/fd/{dfd}/attach.sock")
                    return s
                except (FileNotFoundError, ConnectionRefusedError):
                    s.close()
                    if time.monotonic() > deadline:
                        raise StateTransitionError(
                            f"cannot attach to container {b.spec.name}: it was not created with -it"
                        ) from None
                    time.sleep(0.01)
        finally:
            os.close(dfd)

    def start(self, id: str) -> ContainerState:
        """Release the created PID 1 into execve (it was blocked opening ``exec.fifo``)."""
        cid, b = self._config(id)
        self._start(b)
        return self.state(cid)

    def _start(self, b: Bundle) -> None:
        fifo = os.path.join(b.path, _state.FIFO)
        name = b.spec.name
        try:
            fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            st = self.state(b.spec.id)
            raise StateTransitionError(f"cannot start container {name}: it is {st.status}") from None
        try:
            state = _state.read_json(os.path.join(b.path, _state.STATE))
            released = False
            while True:
                ready, _, _ = select.select([fd], [], [], 0.5)
                data = os.read(fd, 1) if ready else b""
                if data == b"0":
                    released = True
                elif ready and released:
                    break  # EOF: the writer end closed on execve (or the process exited)
                elif not _state.alive(state["pid"], state["pid_starttime"]):
                    if released:
                        break
                    raise StateTransitionError(f"cannot start container {name}: its process is gone")
        finally:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(fifo)

    def run(self, spec: ContainerSpec, *, detach: bool = False) -> ContainerState | RunResult:
        """create + start; unless ``detach``, wait and return the exit code and the output.

        The output is read back from ``log.jsonl`` by stream once the container exited. The state
        is computed once, at the end (create, start and wait each need only the bundle).
        """
        self._create(spec)
        cid, b = self._config(spec.id)
        try:
            self._start(b)
        except BaseException:
            self.delete(cid, force=True)
            raise
        if detach:
            return self.state(cid)
        self._wait(b, None)
        st = self.state(cid)
        out: list[bytes] = []
        err: list[bytes] = []
        for stream, line in self.logs(cid):
            (out if stream == "stdout" else err).append(line)
        return RunResult(st.exit_code, b"".join(out), b"".join(err), st.oom_killed)

    def state(self, id: str) -> ContainerState:
        """The container now: status recomputed from the system and written back when it changed."""
        cid, b = self._config(id)
        bundle = b.path
        path = os.path.join(bundle, _state.STATE)
        try:
            st = _state.read_json(path)
        except FileNotFoundError:
            st = {}
        status = _state.status(bundle, st, b.cgroups) if st else "created"
        if st and status == "exited" and not st.get("finished_at"):
            # PID 1 is gone but the shim has not recorded it yet: give it a moment.
            _wait_pid(st.get("shim_pid", 0), st.get("shim_starttime", 0), 2.0)
            try:
                st = _state.read_json(path)
            except FileNotFoundError:
                raise NotFoundError(f"container {id!r} not found (removed meanwhile)") from None
        if st and not st.get("monitor_lost") and _state.shim_lost(st):
            st = _state.mark_monitor_lost(bundle) or st  # once: state.json flag + a closing log line
        if st and status == "exited" and not st.get("finished_at") and st.get("monitor_lost"):
            # The runner, the subreaper that adopted PID 1, records its real exit status as it reaps it.
            deadline = time.monotonic() + 1.0
            while not st.get("finished_at") and time.monotonic() < deadline:
                time.sleep(0.01)
                with contextlib.suppress(FileNotFoundError, ValueError):
                    st = _state.read_json(path)
        shim_alive = bool(st) and _state.alive(st.get("shim_pid", 0), st.get("shim_starttime", 0))
        if st and status != st.get("status") and not (status == "exited" and shim_alive):
            if status == "exited" and not st.get("finished_at"):
                # Nobody saw the exit (the shim died, the runner did not reap PID 1): Docker shows
                # 255 for an exit status it cannot know.
                st = _state.record_lost_exit(bundle, 255) or st
            else:
                st = _state.update(bundle, {"status": status})
        return ContainerState(
            id=cid, name=b.spec.name, status=status,
            pid=st.get("pid", 0) if status != "exited" else 0,
            exit_code=st.get("exit_code", 0), oom_killed=st.get("oom_killed", False),
            created=b.created, started_at=st.get("started_at", ""),
            finished_at=st.get("finished_at", ""), spec=b.spec,
            monitor_lost_at=st.get("monitor_lost_at", "") if st.get("monitor_lost") else "",
            cgroups=b.cgroups, bundle=bundle,
            network_settings=(st.get("network") or {}) if status != "exited" else {},
        )

    def list(self) -> list[ContainerState]:
        out = []
        for entry in sorted(os.scandir(self.containers_dir), key=lambda e: e.name):
            if _ID.match(entry.name):
                try:
                    out.append(self.state(entry.name))
                except (NotFoundError, FileNotFoundError, NotADirectoryError):
                    continue  # removed while we listed
        return out

    def kill(self, id: str, signal: int = _signal.SIGKILL) -> None:
        st = self.state(id)
        if st.status == "exited":
            raise StateTransitionError(f"container {st.name} is not running")
        if st.status == "paused":
            raise StateTransitionError(f"container {st.name} is paused: unpause it before killing it")
        if st.pid <= 0:
            raise StateTransitionError(f"container {st.name} has no process to signal")
        if signal == _signal.SIGKILL:
            _kill_all(st)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(st.pid, signal)

    def stop(self, id: str, timeout: float = 10) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds, as ``docker stop``.

        PID 1 of a pid namespace ignores signals it has no handler for, so a plain ``sleep``
        needs the SIGKILL.
        """
        st = self.state(id)
        if st.status == "exited":
            return
        if st.status == "paused":
            self.unpause(id)
        if st.pid <= 0:
            return
        try:
            os.kill(st.pid, _signal.SIGTERM)
            self.wait(st.id, timeout=timeout)
            return
        except ProcessLookupError:
            pass
        except TimeoutError:
            _kill_all(st)
        self.wait(st.id)

    def pause(self, id: str) -> None:
        st = self.state(id)
        if st.status != "running":
            raise StateTransitionError(f"container {st.name} is not running")
        cgroups.freeze(st.cgroups, True)
        self.state(id)

    def unpause(self, id: str) -> None:
        st = self.state(id)
        if st.status != "paused":
            raise StateTransitionError(f"container {st.name} is not paused")
        cgroups.freeze(st.cgroups, False)
        self.state(id)

    def wait(self, id: str, timeout: float | None = None) -> int:
        """Block until the container exited; its exit code. ``TimeoutError`` after ``timeout``."""
        cid, b = self._config(id)
        self._wait(b, timeout)
        return self.state(cid).exit_code

    def _wait(self, b: Bundle, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            st = _state.read_json(os.path.join(b.path, _state.STATE))
            if st.get("finished_at") or not st.get("shim_pid"):
                return
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if _state.shim_lost(st):
                # Its monitor is gone: wait for PID 1 itself, then record the exit (state does).
                if not _wait_pid(st.get("pid", 0), st.get("pid_starttime", 0), left):
                    break
                self.state(b.spec.id)
                return
            if not _wait_pid(st["shim_pid"], st["shim_starttime"], left):
                break
            # the shim recorded the exit, or it was killed and the branch above takes over
        raise TimeoutError(f"container {b.spec.name} still running after {timeout} s")

    def delete(self, id: str, *, force: bool = False) -> None:
        """Remove the container: kill it (``force``), unmount, remove its cgroups and directory.

        The snapshot under ``overlay/`` belongs to the engine, which removes it afterwards.
        """
        cid, _ = self._config(id)
        self._request(protocol.Delete(cid, force))

    def exec(self, id: str, args: builtins.list[str], *, env: builtins.list[str] | None = None,
             cwd: str | None = None, user: str | None = None, stdin: bytes | None = None, tty: bool = False,
             detach: bool = False) -> RunResult:
        """Run ``args`` inside a running container (its namespaces, cgroups and capabilities)."""
        st = self.state(id)
        if st.status == "paused":
            raise StateTransitionError(f"container {st.name} is paused, unpause the container before exec")
        if st.status != "running":
            raise StateTransitionError(f"container {st.name} is not running")
        if not args:
            raise InvalidArgumentError("exec needs a command")
        reply = self._request(protocol.Exec(st.id, list(args), list(env or []), cwd, user, tty, detach,
                                            stdin))
        assert isinstance(reply, protocol.Finished)
        return RunResult(reply.exit_code, reply.stdout, reply.stderr)

    # -- looking at it -----------------------------------------------------------------------

    def logs(self, id: str, *, tail: int | None = None, follow: bool = False) -> Iterator[tuple[str, bytes]]:
        """``(stream, line)`` from ``log.jsonl`` (Docker's json-file records), oldest first."""
        cid, b = self._config(id)
        path = os.path.join(b.path, _state.LOG)
        if not os.path.exists(path):
            return
        lost = self._monitor_lost(b)  # noticed here: the log ends with a line saying so
        with open(path, "rb") as f:
            lines = f.readlines()
            if tail is not None:
                lines = lines[-tail:] if tail > 0 else []
            for raw in lines:
                yield _decode(raw)
            while follow:
                raw = f.readline()
                if raw.endswith(b"\n"):
                    yield _decode(raw)
                    continue
                if raw:
                    f.seek(-len(raw), os.SEEK_CUR)
                if lost or self.state(cid).status == "exited" or self._monitor_lost(b):
                    rest = f.read()
                    for line in rest.splitlines(keepends=True):
                        yield _decode(line)
                    return
                time.sleep(0.05)

    def top(self, id: str) -> builtins.list[dict]:
        """Processes of the container like ``ps -ef`` (UID PID PPID C STIME TTY TIME CMD), host pids."""
        st = self.state(id)
        if st.status not in ("running", "paused"):
            raise StateTransitionError(f"container {st.name} is not running")
        tick = os.sysconf("SC_CLK_TCK")
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        boot = time.time() - uptime
        rows = []
        for pid in cgroups.procs(st.cgroups):
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    raw = f.read()
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read()
                uid = os.stat(f"/proc/{pid}").st_uid
            except (FileNotFoundError, ProcessLookupError):
                continue
            comm = raw[raw.index(b"(") + 1:raw.rindex(b")")].decode(errors="replace")
            fields = raw[raw.rindex(b")") + 2:].split()
            ppid, tty_nr = int(fields[1]), int(fields[4])
            cpu = (int(fields[11]) + int(fields[12])) / tick
            started = boot + int(fields[19]) / tick
            elapsed = max(time.time() - started, 1e-9)
            try:
                user = pwd.getpwuid(uid).pw_name
            except KeyError:
                user = str(uid)
            rows.append({
                "UID": user, "PID": pid, "PPID": ppid, "C": int(100 * cpu / elapsed),
                "STIME": time.strftime("%H:%M", time.localtime(started)),
                "TTY": _tty_name(tty_nr),
                "TIME": time.strftime("%H:%M:%S", time.gmtime(int(cpu))),
                "CMD": " ".join(a.decode(errors="replace") for a in cmdline.rstrip(b"\0").split(b"\0"))
                if cmdline else f"[{comm}]",
            })
        return rows

    # -- helpers -----------------------------------------------------------------------------

    def _monitor_lost(self, b: Bundle) -> bool:
        """Did the container's shim die before it exited? Recorded (with a log line) when first seen."""
        try:
            st = _state.read_json(os.path.join(b.path, _state.STATE))
        except (FileNotFoundError, ValueError):
            return False
        if not st.get("monitor_lost") and _state.shim_lost(st):
            st = _state.mark_monitor_lost(b.path)
        return bool(st.get("monitor_lost")) and not st.get("finished_at")

    def _config(self, id: str) -> tuple[str, Bundle]:
        """(full id, bundle) of a container given its id, a unique id prefix, or its name."""
        cid = self._resolve(id)
        try:
            return cid, Bundle.from_json(_state.read_json(str(self.containers_dir / cid / _state.CONFIG)))
        except FileNotFoundError:
            raise NotFoundError(f"container {id!r} not found") from None

    def _resolve(self, id: str) -> str:
        id = id.strip()
        if _ID.match(id) and (self.containers_dir / id).is_dir():
            return id
        try:
            ids = [e for e in os.listdir(self.containers_dir) if _ID.match(e)]
        except FileNotFoundError:
            ids = []
        for cid in ids:
            try:
                if _state.read_json(str(self.containers_dir / cid / _state.CONFIG))["name"] == id:
                    return cid
            except (FileNotFoundError, ValueError, KeyError):
                continue
        matches = [cid for cid in ids if id and cid.startswith(id)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InvalidArgumentError(f"container id prefix {id!r} is ambiguous")
        raise NotFoundError(f"container {id!r} not found")


def _runner_env() -> dict[str, str]:
    """Our environment, plus the directory this package is imported from (it may not be installed)."""
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH", "")) if p)
    return env


def _validate(spec: ContainerSpec, root: str) -> None:
    if not _ID.match(spec.id):
        raise InvalidArgumentError(f"invalid container id {spec.id!r}: want 64 hex digits")
    if spec.name and (not _NAME.match(spec.name) or len(spec.name) < 2):  # "": the runner names it
        raise InvalidArgumentError(
            f"invalid container name {spec.name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    if not spec.args:
        raise InvalidArgumentError(f"container {spec.name}: no command specified")
    if spec.network.startswith("container:"):
        if not _ID.match(spec.network.split(":", 1)[1]):
            raise InvalidArgumentError(f"invalid network {spec.network!r}: want container:<full id>")
    elif network.is_bridge(spec.network):
        if not network.exists(root, spec.network):
            raise NotFoundError(f"network {spec.network} not found")
        for p in spec.publish:
            network.parse_publish(p)
    if not os.path.isabs(spec.merged) or not os.path.isdir(spec.merged):
        raise InvalidArgumentError(f"rootfs mount target {spec.merged!r} is not a directory")
    if not spec.cwd.startswith("/"):
        raise InvalidArgumentError(f"the working directory {spec.cwd!r} is not absolute")
    for m in spec.mounts:
        src, dst = m.source, m.destination
        if not os.path.isabs(src) or not os.path.exists(src):
            raise InvalidArgumentError(f"invalid volume: source path {src!r} does not exist")
        if not os.path.isabs(dst) or os.path.normpath(dst) == "/":
            raise InvalidArgumentError(
                f"invalid volume destination {dst!r}: it must be an absolute path other than /")
    bad = caps.unknown(list(spec.cap_add) + list(spec.cap_drop))
    if bad:
        raise InvalidArgumentError(f"unknown capability: {bad[0]!r}")
    if spec.memory and spec.memory < _MIN_MEMORY:
        raise InvalidArgumentError("Minimum memory limit allowed is 6MB")
    if spec.pids_limit < 0 or spec.cpus < 0:
        raise InvalidArgumentError("limits must not be negative")


def _wait_pid(pid: int, start: int, timeout: float | None) -> bool:
    """Wait for ``pid`` (not our child) to exit through a pidfd; False on timeout."""
    if not _state.alive(pid, start):
        return True
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        if not _state.alive(pid, start):  # the pid was reused between the check and the open
            return True
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)


def _kill_all(st: ContainerState) -> None:
    """SIGKILL PID 1 and every process of the container's cgroups (found there, never by name);
    what reaches a container whose shim died too."""
    for victim in {st.pid, *cgroups.procs(st.cgroups)}:
        if victim > 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, _signal.SIGKILL)


def _decode(raw: bytes) -> tuple[str, bytes]:
    rec = json.loads(raw)
    return rec["stream"], rec["log"].encode("utf-8", "surrogateescape")


def _tty_name(tty_nr: int) -> str:
    if not tty_nr:
        return "?"
    major, minor = (tty_nr >> 8) & 0xFFF, (tty_nr & 0xFF) | ((tty_nr >> 12) & 0xFFF00)
    if 136 <= major <= 143:
        return f"pts/{(major - 136) * 256 + minor}"
    if major == 4:
        return f"tty{minor}"
    return f"{major}:{minor}"
