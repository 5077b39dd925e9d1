"""Container state on disk, shared by the client, the runner and the shim (kept import-light).

``containers/<id>/state.json`` is written by the shim (created, started, exited) with temp +
``os.replace``. Readers recompute the status from the system, like runc: the recorded pid must be
alive *and* have the recorded start time (``/proc/<pid>/stat`` field 22), ``exec.fifo`` still present
means the process waits for ``start``, and a frozen freezer cgroup means paused.
"""

from __future__ import annotations

import fcntl
import json
import os
import time

from nbcontainer.runtime import cgroups

STATE = "state.json"
CONFIG = "config.json"
FIFO = "exec.fifo"
LOG = "log.jsonl"


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
    tmp = f"{path}.tmp-{os.getpid()}"
    # 0600: a container's config holds its -e values, its state its pids
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(json.dumps(obj).encode())
    os.replace(tmp, path)


def update(bundle: str, fields: dict) -> dict:
    """Read-modify-write of state.json under a lock (the shim and a client may both write)."""
    fd = os.open(os.path.join(bundle, "state.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        path = os.path.join(bundle, STATE)
        try:
            state = read_json(path)
        except FileNotFoundError:
            state = {}
        state.update(fields)
        write_json(path, state)
        return state
    finally:
        os.close(fd)


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
