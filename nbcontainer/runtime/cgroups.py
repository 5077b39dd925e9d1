"""cgroups v1, hybrid and v2: one ``nbcontainer/<id>`` group per container.

The hierarchy is probed once from ``/proc/self/mountinfo``: each controller we use (memory, pids,
cpu, cpuacct, freezer) is taken from its v1 mount when one exists, else from the v2 hierarchy when
its ``cgroup.controllers`` lists it. On v1 the group nests under the caller's own cgroup of that
hierarchy (a sandboxed host keeps accounting for us); on v2 it sits at the root, because the
"no internal processes" rule forbids enabling controllers below a cgroup that holds processes.

A container's groups are a dict ``{hierarchy key: absolute dir}``; the key is the v1 controller
name or ``"unified"``. That dict is stored in the container's config and is all later calls need.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import time

from nbcontainer.runtime import devices as devices_mod
from nbcontainer.runtime.devices import DeviceRule

PARENT = "nbcontainer"
_WANTED_V1 = ("memory", "pids", "cpu", "cpuacct", "freezer", "devices")
_WANTED_V2 = ("memory", "pids", "cpu")


@functools.lru_cache(maxsize=1)
def layout() -> tuple[dict[str, str], str, tuple[str, ...]]:
    """``(v1 {controller: group dir of this process}, v2 mount point or "", v2 controllers)``."""
    v1_mounts: dict[str, str] = {}
    v2_mount = ""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            fields = pre.split()
            fstype, _src, opts = post.split()[:3]
            if fstype == "cgroup":
                for opt in opts.split(","):
                    if opt in _WANTED_V1:
                        v1_mounts.setdefault(opt, fields[4])
            elif fstype == "cgroup2" and not v2_mount:
                v2_mount = fields[4]
    own: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _n, ctrls, path = line.rstrip("\n").split(":", 2)
            for c in ctrls.split(","):
                own[c] = path
    v1 = {c: os.path.join(m, own.get(c, "/").lstrip("/")).rstrip("/") for c, m in v1_mounts.items()}
    v2_ctrls: tuple[str, ...] = ()
    if v2_mount:
        try:
            with open(os.path.join(v2_mount, "cgroup.controllers")) as f:
                v2_ctrls = tuple(f.read().split())
        except OSError:
            v2_ctrls = ()
    return v1, v2_mount, v2_ctrls


def paths(container_id: str) -> dict[str, str]:
    """Where the groups of ``container_id`` live (whether or not they exist yet)."""
    v1, v2_mount, v2_ctrls = layout()
    out = {c: os.path.join(base, PARENT, container_id) for c, base in v1.items()}
    missing = [c for c in _WANTED_V2 if c not in v1]
    # the v2 group also carries the eBPF device filter when v1 has no devices controller
    if v2_mount and (not v1 or "devices" not in v1 or any(c in v2_ctrls for c in missing)):
        out["unified"] = os.path.join(v2_mount, PARENT, container_id)
    return out


def _write(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def create(groups: dict[str, str], *, memory: int = 0, pids: int = 0, cpus: float = 0.0,
           devices: list[DeviceRule] | None = None) -> None:
    """Make the groups, set the limits and the device allow list (v1 ``devices`` controller, else
    an eBPF program on the v2 group); raises ``OSError`` naming the file that failed.

    A container never runs without a device policy: on a host with neither, this refuses.
    """
    for key, path in groups.items():
        parent = os.path.dirname(path)
        if key == "unified":
            _v2_enable(os.path.dirname(parent))
            os.makedirs(parent, exist_ok=True)
            _v2_enable(parent)
        else:
            os.makedirs(parent, exist_ok=True)
        for attempt in range(3):
            try:
                os.mkdir(path)
                break
            except FileNotFoundError:
                # a delete removed the empty parent between our makedirs and mkdir: make it again
                if attempt == 2:
                    raise
                os.makedirs(parent, exist_ok=True)
    try:
        _limits(groups, memory, pids, cpus)
    except OSError as err:
        remove(groups)
        raise OSError(err.errno, f"cgroup limit: {err.strerror}: {err.filename or ''}") from err
    rules = devices_mod.rules_for([]) if devices is None else devices
    try:
        if "devices" in groups:
            devices_mod.apply_v1(groups["devices"], rules)
        elif "unified" in groups:
            os.close(devices_mod.attach_v2(groups["unified"], rules))
        else:
            raise OSError(errno.ENOTSUP, "no devices cgroup (v1) and no cgroup v2 group for a device filter")
    except OSError as err:
        remove(groups)
        raise OSError(err.errno, f"device cgroup: {err.strerror}") from err


def _v2_enable(path: str) -> None:
    """Enable our controllers for the children of ``path`` (best effort: only those available)."""
    try:
        avail = _read(os.path.join(path, "cgroup.controllers")).split()
        enabled = _read(os.path.join(path, "cgroup.subtree_control")).split()
    except OSError:
        return
    todo = [c for c in _WANTED_V2 if c in avail and c not in enabled]
    if todo:
        _write(os.path.join(path, "cgroup.subtree_control"), " ".join("+" + c for c in todo))


def _set(path: str, name: str, value: str) -> None:
    target = os.path.join(path, name)
    try:
        _write(target, value)
    except OSError as err:
        raise OSError(err.errno, err.strerror, target) from err


def _limits(groups: dict[str, str], memory: int, pids: int, cpus: float) -> None:
    v2 = groups.get("unified")
    if memory:
        if "memory" in groups:
            _set(groups["memory"], "memory.limit_in_bytes", str(memory))
            # Without memsw the limit only counts RAM and a host with swap would page, not OOM.
            if os.path.exists(os.path.join(groups["memory"], "memory.memsw.limit_in_bytes")):
                _set(groups["memory"], "memory.memsw.limit_in_bytes", str(memory))
        elif v2:
            _set(v2, "memory.max", str(memory))
            if os.path.exists(os.path.join(v2, "memory.swap.max")):
                _set(v2, "memory.swap.max", "0")
    if pids:
        if "pids" in groups:
            _set(groups["pids"], "pids.max", str(pids))
        elif v2:
            _set(v2, "pids.max", str(pids))
    if cpus:
        period = 100000
        quota = max(1000, int(cpus * period))
        if "cpu" in groups:
            _set(groups["cpu"], "cpu.cfs_period_us", str(period))
            _set(groups["cpu"], "cpu.cfs_quota_us", str(quota))
        elif v2:
            _set(v2, "cpu.max", f"{quota} {period}")


def procs_files(groups: dict[str, str]) -> list[str]:
    """The files a process writes ``0`` to in order to join every group."""
    return [os.path.join(p, "cgroup.procs") for p in groups.values()]


def procs(groups: dict[str, str]) -> list[int]:
    """Host pids of the processes in the container's groups."""
    for key in ("pids", "memory", "freezer", "unified", *groups):
        if key in groups:
            try:
                return sorted(int(x) for x in _read(os.path.join(groups[key], "cgroup.procs")).split())
            except FileNotFoundError:
                return []
    return []


def freeze(groups: dict[str, str], frozen: bool) -> None:
    """Freeze or thaw every process of the container and wait until the kernel says it is done."""
    if "freezer" in groups:
        f = os.path.join(groups["freezer"], "freezer.state")
        want = "FROZEN" if frozen else "THAWED"
        _write(f, want)
        for _ in range(1000):
            if _read(f).strip() == want:
                return
            time.sleep(0.002)
            _write(f, want)
        raise OSError(errno.EBUSY, f"{f} did not reach {want}")
    if "unified" in groups:
        _write(os.path.join(groups["unified"], "cgroup.freeze"), "1" if frozen else "0")
        events = os.path.join(groups["unified"], "cgroup.events")
        for _ in range(1000):
            if f"frozen {int(frozen)}" in _read(events):
                return
            time.sleep(0.002)
        raise OSError(errno.EBUSY, f"{events} did not report frozen {int(frozen)}")
    raise OSError(errno.ENOTSUP, "no freezer cgroup for this container")


def is_frozen(groups: dict[str, str]) -> bool:
    try:
        if "freezer" in groups:
            return _read(os.path.join(groups["freezer"], "freezer.state")).strip() != "THAWED"
        if "unified" in groups:
            return "frozen 1" in _read(os.path.join(groups["unified"], "cgroup.events"))
    except FileNotFoundError:
        return False
    return False


def oom_kills(groups: dict[str, str]) -> int:
    """How many processes the kernel OOM-killed in the container's memory group."""
    try:
        if "memory" in groups:
            text = _read(os.path.join(groups["memory"], "memory.oom_control"))
        elif "unified" in groups:
            text = _read(os.path.join(groups["unified"], "memory.events"))
        else:
            return 0
    except FileNotFoundError:
        return 0
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        if k == "oom_kill":
            return int(v)
    return 0


def remove(groups: dict[str, str], *, timeout: float = 5.0) -> None:
    """Remove the groups, retrying while exiting tasks drain (rmdir fails with EBUSY until then)."""
    deadline = time.monotonic() + timeout
    for key, path in groups.items():
        if key == "freezer" and os.path.isdir(path):
            with contextlib.suppress(OSError):
                _write(os.path.join(path, "freezer.state"), "THAWED")
        while True:
            try:
                os.rmdir(path)
                break
            except FileNotFoundError:
                break
            except OSError as err:
                if err.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.005)
        # the shared ``nbcontainer`` parent goes with its last container (rmdir refuses while
        # another container's group is in it, so this never races a live one away)
        parent = os.path.dirname(path)
        if os.path.basename(parent) == "nbcontainer":
            with contextlib.suppress(OSError):
                os.rmdir(parent)
