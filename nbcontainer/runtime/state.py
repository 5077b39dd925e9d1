"""Container state on disk, shared by the client, the runner and the shim (kept import-light).

``containers/<id>/state.json`` is written by the shim (created, started, exited) with temp +
``os.replace``. Readers recompute the status from the system, like runc: the recorded pid must be
alive *and* have the recorded start time (``/proc/<pid>/stat`` field 22), ``exec.fifo`` still present
means the process waits for ``start``, and a frozen freezer cgroup means paused.

A shim that dies before its container (``kill -9``, a crash) is a lost monitor. The status stays
what the system says (usually ``running``: PID 1 lives on, adopted by the runner as subreaper) and
state.json gains ``monitor_lost: true`` and ``monitor_lost_at``, with a last stderr line in the log,
once, by whoever notices first (the runner reaping the shim, or a reader). ``stop``/``kill`` then
reach PID 1 and the cgroup's processes directly; the exit is recorded by the runner that reaps PID 1
(its real status, 137 after SIGKILL) or, when nobody could see it, as 255 (Docker's unknown exit).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from collections.abc import Callable

from nbcontainer.runtime import cgroups

STATE = "state.json"
CONFIG = "config.json"
FIFO = "exec.fifo"
LOG = "log.jsonl"
RESERVE = "state.reserve"
RESERVE_SIZE = 64 * 1024


def now() -> str:
    """The current time as RFC 3339 with nanoseconds, UTC (Docker's ``time`` field)."""
    ns = time.time_ns()
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000))
    return f"{seconds}.{ns % 1_000_000_000:09d}Z"


def starttime(pid: int) -> int:
    """Start time of ``pid`` in clock ticks since boot; 0 when it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    fields = raw[raw.rindex(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):
        return 0
    return int(fields[19])


def alive(pid: int, start: int) -> bool:
    return pid > 0 and start > 0 and starttime(pid) == start


def read_json(path: str) -> dict:
    with open(path, "rb") as f:
        return json.loads(f.read())


def write_json(path: str, obj: dict) -> None:
    """Atomic replace. No fsync: this is the hot path of every container, and ext4 orders a
    rename-over after the data of the file it replaces (auto_da_alloc)."""
    data = json.dumps(obj).encode()
    try:
        _write_replace(path, data)
    except OSError as err:
        # A full disk: give back the space reserved at create and write again, so the exit code
        # of a container that filled the disk is still recorded.
        reserve = os.path.join(os.path.dirname(path), RESERVE)
        if err.errno not in (errno.ENOSPC, errno.EDQUOT) or not os.path.exists(reserve):
            raise
        os.unlink(reserve)
        _write_replace(path, data)


def _write_replace(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    # 0600: a container's config holds its -e values, its state its pids
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def reserve_space(bundle: str) -> None:
    """Set aside a little space in the bundle for the last state writes (see :func:`write_json`)."""
    fd = os.open(os.path.join(bundle, RESERVE), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, bytes(RESERVE_SIZE))
    finally:
        os.close(fd)


def update(bundle: str, fields: dict) -> dict:
    """Read-modify-write of state.json under a lock (the shim and a client may both write)."""
    return _locked_update(bundle, lambda _state: fields)


def _locked_update(bundle: str, change: Callable[[dict], dict]) -> dict:
    """``change(state)`` returns the fields to write (or ``{}``), decided under the state lock."""
    fd = os.open(os.path.join(bundle, "state.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        path = os.path.join(bundle, STATE)
        try:
            state = read_json(path)
        except FileNotFoundError:
            state = {}
        fields = change(state)
        if fields:
            state.update(fields)
            write_json(path, state)
        return state
    finally:
        os.close(fd)


def shim_lost(state: dict) -> bool:
    """Did the container's shim (its monitor) die while the container had not exited?

    Its PID 1 may still live (adopted by the runner, the shim's subreaper): nothing pumps its
    output any more and nothing would record its exit.
    """
    return (bool(state.get("shim_pid")) and not state.get("finished_at")
            and not alive(state.get("shim_pid", 0), state.get("shim_starttime", 0)))


def mark_monitor_lost(bundle: str) -> dict:
    """Record once that the shim died (``monitor_lost``, ``monitor_lost_at`` in state.json) and end
    the log with a stderr line saying so; the state after. A no-op when already recorded, when the
    container exited, or when the shim lives."""
    note: list[str] = []

    def change(state: dict) -> dict:
        if state.get("monitor_lost") or not shim_lost(state):
            return {}
        note.append(now())
        return {"monitor_lost": True, "monitor_lost_at": note[0]}

    try:
        state = _locked_update(bundle, change)
    except (FileNotFoundError, NotADirectoryError):
        return {}  # removed meanwhile
    if note:
        text = (f"nbcontainer: the container's monitor (shim pid {state.get('shim_pid', 0)}) died at "
                f"{note[0]}; output after this is lost\n")
        with contextlib.suppress(OSError):
            fd = os.open(os.path.join(bundle, LOG), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                         0o600)
            try:
                os.write(fd, log_record("stderr", text.encode(), note[0]))
            finally:
                os.close(fd)
    return state


def record_lost_exit(bundle: str, code: int) -> dict:
    """The exit of a container whose shim died, unless one is recorded already (the runner, which
    reaps the orphaned PID 1, knows its real status; a reader that cannot know writes 255)."""

    def change(state: dict) -> dict:
        if state.get("finished_at"):
            return {}
        return {"network": {}, "status": "exited", "pid": 0, "exit_code": code,
                "oom_killed": state.get("oom_killed", False), "finished_at": now()}

    try:
        return _locked_update(bundle, change)
    except (FileNotFoundError, NotADirectoryError):
        return {}


def status(bundle: str, state: dict, groups: dict[str, str]) -> str:
    """``created``, ``running``, ``paused`` or ``exited``, recomputed from the system."""
    if state.get("finished_at"):
        return "exited"
    if not alive(state.get("pid", 0), state.get("pid_starttime", 0)):
        return "exited"
    if os.path.exists(os.path.join(bundle, FIFO)):
        return "created"
    if cgroups.is_frozen(groups):
        return "paused"
    return "running"


def log_record(stream: str, data: bytes, when: str) -> bytes:
    """One json-file record; bytes that are not UTF-8 survive as surrogate escapes."""
    text = data.decode("utf-8", "surrogateescape")
    return json.dumps({"log": text, "stream": stream, "time": when}).encode() + b"\n"
