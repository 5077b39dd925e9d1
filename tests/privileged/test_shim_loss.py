"""A container whose shim (its monitor) was SIGKILLed while its PID 1 lives (root only)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from nbc_testing import alive

from nbcontainer.runtime import cgroups

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces, cgroups and overlay mounts"),
    pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="busybox-static is not installed"),
]


def _state(bundle: str) -> dict:
    return json.loads((Path(bundle) / "state.json").read_text())


def _kill_shim(bundle: str) -> tuple[int, int]:
    """SIGKILL the shim; (shim pid, PID 1) once the shim is gone and the runner reaped it."""
    st = _state(bundle)
    shim, pid = st["shim_pid"], st["pid"]
    os.kill(shim, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{shim}") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not os.path.exists(f"/proc/{shim}"), "the runner did not reap the killed shim"
    assert alive(pid), "PID 1 must outlive its shim"
    return shim, pid


def _mounted(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def test_a_lost_monitor_is_reported_stopped_through_the_cgroup_and_removed(busybox_engine):
    e = busybox_engine
    c = e.run("busybox", ["sleep", "300"], detach=True, name="lost1")
    st = e.runtime.state(c.id)
    bundle, groups, merged = st.bundle, st.cgroups, st.spec.merged
    shim, pid = _kill_shim(bundle)

    # noticed (by the runner that reaped the shim, or by this read): flagged once, still running
    st = e.runtime.state(c.id)
    assert st.status == "running" and st.pid == pid
    raw = _state(bundle)
    assert raw["monitor_lost"] is True and raw["monitor_lost_at"]
    assert st.monitor_lost_at == raw["monitor_lost_at"]
    assert e.inspect(c.id)["State"]["Error"].startswith("the container's monitor died at")
    logs = list(e.logs(c.id))
    notes = [line for stream, line in logs if b"monitor" in line]
    assert len(notes) == 1 and logs[-1][0] == "stderr", logs
    assert f"shim pid {shim}".encode() in notes[0] and b"output after this is lost" in notes[0]
    assert len([line for _, line in e.logs(c.id) if b"monitor" in line]) == 1  # written once

    # stop reaches PID 1 without the shim: SIGTERM is ignored by a PID 1 sleep, SIGKILL after 1 s
    started = time.monotonic()
    e.stop(c.id, timeout=1)
    assert time.monotonic() - started < 6
    assert not alive(pid)
    st = e.runtime.state(c.id)
    assert st.status == "exited"
    assert st.exit_code == 137  # the runner reaped the adopted PID 1 and saw the SIGKILL
    assert cgroups.procs(groups) == []

    e.rm(c.id, force=True)
    assert not os.path.exists(bundle)
    assert not _mounted(merged)
    assert [p for p in groups.values() if os.path.exists(p)] == []


def test_rm_force_of_a_container_whose_monitor_died_kills_and_cleans_everything(busybox_engine):
    e = busybox_engine
    c = e.run("busybox", ["sh", "-c", "sleep 300 & sleep 300"], detach=True, name="lost2")
    st = e.runtime.state(c.id)
    bundle, groups, merged = st.bundle, st.cgroups, st.spec.merged
    _, pid = _kill_shim(bundle)
    procs = cgroups.procs(groups)
    assert pid in procs and len(procs) >= 2

    e.rm(c.id, force=True)
    assert not os.path.exists(bundle)
    assert not _mounted(merged)
    assert [p for p in groups.values() if os.path.exists(p)] == []
    deadline = time.monotonic() + 5
    while any(alive(p) for p in procs) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [p for p in procs if alive(p)] == []


def test_kill_of_a_lost_monitor_reaches_every_process_of_its_cgroup(busybox_engine):
    e = busybox_engine
    c = e.run("busybox", ["sleep", "300"], detach=True, name="lost3")
    st = e.runtime.state(c.id)
    _, pid = _kill_shim(st.bundle)
    e.kill(c.id)
    assert e.wait(c.id, timeout=5) == 137
    assert not alive(pid)
    assert e.runtime.state(c.id).status == "exited"
    e.rm(c.id)


def test_an_exit_nobody_saw_is_recorded_as_255(busybox_engine):
    """Runner and shim both gone: PID 1's status goes to the host's init, so it cannot be known."""
    e = busybox_engine
    c = e.run("busybox", ["sleep", "300"], detach=True, name="lost4")
    bundle = e.runtime.state(c.id).bundle
    runner = e.runtime.runner_pid()
    os.kill(runner, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while alive(runner) and time.monotonic() < deadline:
        time.sleep(0.01)
    st = _state(bundle)
    shim, pid = st["shim_pid"], st["pid"]
    os.kill(shim, signal.SIGKILL)
    while alive(shim) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alive(shim) and alive(pid)
    assert e.runtime.state(c.id).status == "running"
    assert _state(bundle)["monitor_lost"] is True
    e.stop(c.id, timeout=1)
    assert not alive(pid)
    st = e.runtime.state(c.id)
    assert (st.status, st.exit_code) == ("exited", 255)
    e.rm(c.id)
