"""The device policy against the real kernel: a v1 ``devices`` group and a v2 eBPF device program.

Each test forks a child that moves itself into the test's group(s), then probes: open /dev/null and
/dev/zero, mknod a loop node (b 7:0) and loop-control (c 10:237) in a temp dir and open them. It
sends ``{probe: 0 or errno}`` back over a pipe. The parent reaps the child by pid, removes the
nodes and rmdirs the groups, also when the test fails.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import select
import signal
import stat
import time
from collections.abc import Callable, Iterator

import pytest

from nbcontainer.runtime.devices import (
    DEFAULT_RULES,
    DeviceRule,
    apply_v1,
    attach_v2,
    detach_v2,
    parse_device,
    rules_for,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: cgroups, mknod and bpf(2)")

V1_DEVICES = "/sys/fs/cgroup/devices"
V2_ROOT = "/sys/fs/cgroup/unified"
HAS_LOOP_CONTROL = os.path.exists("/dev/loop-control")
EPERM = errno.EPERM
LOOP_CONTROL = DeviceRule("c", 10, 237, "rwm", True)


def _try(fn: Callable[[], object]) -> int:
    try:
        fn()
    except OSError as e:
        return e.errno
    return 0


def _open_close(path: str, flags: int, check: Callable[[int], None] | None = None) -> None:
    fd = os.open(path, flags | os.O_CLOEXEC)
    try:
        if check:
            check(fd)
    finally:
        os.close(fd)


def _probe(node_dir: str) -> dict[str, int]:
    """Runs in the child, inside the groups. 0 = it worked, else the errno."""
    loop, ctl = os.path.join(node_dir, "loop0"), os.path.join(node_dir, "loop-control")

    def zero(fd: int) -> None:
        assert os.read(fd, 1) == b"\0"

    return {
        "null_rw": _try(lambda: _open_close("/dev/null", os.O_RDWR, lambda fd: os.write(fd, b"x"))),
        "zero_read": _try(lambda: _open_close("/dev/zero", os.O_RDONLY, zero)),
        "mknod_loop": _try(lambda: os.mknod(loop, stat.S_IFBLK | 0o600, os.makedev(7, 0))),
        "open_loop": _try(lambda: _open_close(loop, os.O_RDONLY)),
        "mknod_ctl": _try(lambda: os.mknod(ctl, stat.S_IFCHR | 0o600, os.makedev(10, 237))),
        "open_ctl": _try(lambda: _open_close(ctl, os.O_RDWR)),
        "open_ctl_ro": _try(lambda: _open_close(ctl, os.O_RDONLY)),
    }


def run_child(procs_files: list[str], node_dir: str, timeout: float = 30) -> dict[str, int]:
    """Fork a child that writes its pid to each ``cgroup.procs`` in ``procs_files``, then probes."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        status = 1
        try:
            os.close(r)
            for procs in procs_files:
                with open(procs, "w") as f:
                    f.write(str(os.getpid()))
            out: dict[str, object] = dict(_probe(node_dir))
            status = 0
        except BaseException as e:  # noqa: BLE001 - report anything to the parent
            out = {"error": repr(e)}
        finally:
            try:
                os.write(w, json.dumps(out).encode())
            finally:
                os._exit(status)
    os.close(w)
    data = b""
    try:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0 and select.select([r], [], [], left)[0]:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(r)
        _reap(pid)
        for name in ("loop0", "loop-control"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(node_dir, name))
    result = json.loads(data or b'{"error": "no answer from the child"}')
    assert "error" not in result, result["error"]
    return result


def _reap(pid: int) -> None:
    """Wait for our child ``pid``; kill it (by pid) if it has not exited within 10 s."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


@pytest.fixture
def node_dir(tmp_path) -> str:
    d = tmp_path / "nodes"
    d.mkdir()
    return str(d)


@pytest.fixture
def make_group(request) -> Iterator[Callable[[str], str]]:
    """``make_group(hierarchy root)`` -> a fresh group dir named after the test; rmdir'd afterwards."""
    made: list[str] = []
    base = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)[:60]

    def make(root: str) -> str:
        assert os.path.isdir(root), f"{root} is not mounted on this host"
        path = os.path.join(root, f"nbc-test-{base}-{secrets.token_hex(4)}")
        os.mkdir(path)
        made.append(path)
        return path

    yield make
    for path in reversed(made):
        for _ in range(100):  # the exited child may leave the group a moment after waitpid
            try:
                os.rmdir(path)
                break
            except OSError as e:
                if e.errno != errno.EBUSY:
                    raise
                time.sleep(0.02)
        else:
            os.rmdir(path)


def assert_default_policy(res: dict[str, int]) -> None:
    assert res["null_rw"] == 0
    assert res["zero_read"] == 0
    assert res["mknod_loop"] == 0 and res["mknod_ctl"] == 0  # c/b *:* m
    assert res["open_loop"] == EPERM
    assert res["open_ctl"] == EPERM and res["open_ctl_ro"] == EPERM


def assert_ctl_allowed(res: dict[str, int], key: str = "open_ctl") -> None:
    if HAS_LOOP_CONTROL:
        assert res[key] == 0
    else:  # no loop driver: the open gets past the cgroup check and fails in the driver
        assert res[key] not in (0, EPERM)


# --- cgroup v1 -----------------------------------------------------------------------------------

def test_v1_default_rules(make_group, node_dir):
    group = make_group(V1_DEVICES)
    apply_v1(group, DEFAULT_RULES)
    with open(os.path.join(group, "devices.list")) as f:
        listed = f.read().split("\n")
    assert sorted(filter(None, listed)) == sorted(r.v1_text() for r in DEFAULT_RULES[1:])
    assert_default_policy(run_child([os.path.join(group, "cgroup.procs")], node_dir))


def test_v1_extra_rule_allows_loop_control(make_group, node_dir):
    group = make_group(V1_DEVICES)
    apply_v1(group, rules_for([LOOP_CONTROL]))
    res = run_child([os.path.join(group, "cgroup.procs")], node_dir)
    assert_ctl_allowed(res)
    assert res["open_loop"] == EPERM and res["null_rw"] == 0


def test_v1_write_failure_names_file(make_group):
    group = make_group(V1_DEVICES)
    apply_v1(group, DEFAULT_RULES)
    nested = make_group(group)  # v1 refuses to allow a child more than its parent has
    with pytest.raises(OSError, match=r"devices\.allow") as info:
        apply_v1(nested, rules_for([LOOP_CONTROL]))
    assert info.value.errno == EPERM and "c 10:237 rwm" in str(info.value)
    with pytest.raises(OSError, match="nonexistent"):
        apply_v1(os.path.join(group, "nonexistent"), DEFAULT_RULES)


# --- cgroup v2: eBPF ------------------------------------------------------------------------------

def test_v2_without_program_loop_opens(make_group, node_dir):
    """The control: the same probes in a v2 group with no program are not refused."""
    group = make_group(V2_ROOT)
    res = run_child([os.path.join(group, "cgroup.procs")], node_dir)
    assert res["open_loop"] == 0
    assert res["open_ctl"] != EPERM and res["null_rw"] == 0


def test_v2_default_rules(make_group, node_dir):
    group = make_group(V2_ROOT)
    os.close(attach_v2(group, DEFAULT_RULES))  # the attachment keeps the program alive
    assert_default_policy(run_child([os.path.join(group, "cgroup.procs")], node_dir))


def test_v2_device_flag_rule(make_group, node_dir):
    group = make_group(V2_ROOT)
    _, _, rule, _ = parse_device("/dev/loop-control:/dev/loop-control:r") if HAS_LOOP_CONTROL else (
        None, None, DeviceRule("c", 10, 237, "r", True), None)
    os.close(attach_v2(group, rules_for([rule])))
    res = run_child([os.path.join(group, "cgroup.procs")], node_dir)
    assert_ctl_allowed(res, "open_ctl_ro")
    assert res["open_ctl"] == EPERM  # O_RDWR asks for w, which the rule does not give
    assert res["open_loop"] == EPERM


def test_v2_deny_rule_after_allow(make_group, node_dir):
    group = make_group(V2_ROOT)
    os.close(attach_v2(group, rules_for([DeviceRule("c", 1, 3, "w", False)])))
    res = run_child([os.path.join(group, "cgroup.procs")], node_dir)
    assert res["null_rw"] == EPERM and res["zero_read"] == 0


def test_v2_detach(make_group, node_dir):
    group = make_group(V2_ROOT)
    fd = attach_v2(group, DEFAULT_RULES)
    try:
        detach_v2(group, fd)
    finally:
        os.close(fd)
    assert run_child([os.path.join(group, "cgroup.procs")], node_dir)["open_loop"] == 0


# --- hybrid host: a task is in a v1 devices group and a v2 group at once ----------------------------

@pytest.mark.parametrize(("v1_allows", "v2_allows"), [(True, False), (False, True), (True, True)])
def test_hybrid_both_checks_apply(make_group, node_dir, v1_allows, v2_allows):
    """The kernel runs the v2 program first and then the v1 check: either one refusing is EPERM."""
    v1, v2 = make_group(V1_DEVICES), make_group(V2_ROOT)
    apply_v1(v1, rules_for([LOOP_CONTROL] if v1_allows else []))
    os.close(attach_v2(v2, rules_for([LOOP_CONTROL] if v2_allows else [])))
    res = run_child([os.path.join(v1, "cgroup.procs"), os.path.join(v2, "cgroup.procs")], node_dir)
    if v1_allows and v2_allows:
        assert_ctl_allowed(res)
    else:
        assert res["open_ctl"] == EPERM
    assert res["open_loop"] == EPERM and res["null_rw"] == 0
