"""Cleanup shared by fixtures and tests: remove containers, stop the runner, check nothing is left."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

ROOT = os.geteuid() == 0
HAS_BUSYBOX = os.path.exists("/bin/busybox")


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return False
    return raw[raw.rindex(b")") + 2:][:1] not in (b"Z", b"X")


def cleanup_engine(engine, base: Path) -> None:
    """Remove every container of ``engine``, stop its runner by pid, then check nothing is left."""
    pids: list[int] = []
    cgroup_paths: list[str] = []
    if (engine.root / "containers").is_dir():
        from nbcontainer.runtime import cgroups

        for s in engine.runtime.list():
            pids.append(s.pid)
            cgroup_paths += list(cgroups.paths(s.id).values())
            with contextlib.suppress(Exception):  # keep cleaning the others
                engine.rm(s.id, force=True)
    pid_file = engine.root / "run" / "runner.pid"
    if pid_file.exists():
        runner = int(pid_file.read_text())
        with contextlib.suppress(ProcessLookupError):
            os.kill(runner, signal.SIGTERM)
        pids.append(runner)
    deadline = time.monotonic() + 5
    while any(alive(p) for p in pids if p) and time.monotonic() < deadline:
        time.sleep(0.02)
    with open("/proc/self/mountinfo") as f:
        left = [line.split()[4] for line in f if line.split()[4].startswith(str(base))]
    for m in left:
        os.system(f"umount -l '{m}'")
    assert left == [], f"mounts left behind: {left}"
    assert [p for p in cgroup_paths if os.path.exists(p)] == [], "cgroups left behind"
    assert [p for p in pids if p and alive(p)] == [], "processes left behind"


