"""Fixtures for privileged tests: a store root, a busybox image layer, containers, and cleanup.

Every fixture removes what it made, also when the test fails, and the ``store`` teardown checks
that nothing is left: no mount under the root, no ``nbcontainer/<id>`` cgroup of the test's
containers, no live process of them, and it stops the runner by the pid it recorded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

BUSYBOX = "/bin/busybox"


def build_busybox_rootfs(dest: Path) -> str:
    """A busybox rootfs in ``dest`` (the layer's diff dir); returns a stable diff_id-like digest."""
    (dest / "bin").mkdir()
    shutil.copy2(BUSYBOX, dest / "bin" / "busybox")
    listing = subprocess.run([BUSYBOX, "--list-full"], check=True, capture_output=True, text=True)
    applets = listing.stdout.split()
    for applet in applets:
        path = dest / applet
        if path.name == "busybox" or path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(os.path.relpath(dest / "bin" / "busybox", path.parent))
    for d in ("etc", "proc", "sys", "dev", "root", "home"):
        (dest / d).mkdir(exist_ok=True)
    (dest / "tmp").mkdir(mode=0o1777)
    os.chmod(dest / "tmp", 0o1777)
    (dest / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    (dest / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    for name in ("hosts", "resolv.conf", "hostname"):
        (dest / "etc" / name).write_text("")
    h = hashlib.sha256()
    for p in sorted(dest.rglob("*")):
        h.update(str(p.relative_to(dest)).encode())
    h.update(Path(BUSYBOX).read_bytes())
    return "sha256:" + h.hexdigest()


@pytest.fixture(scope="session")
def busybox_diff_id(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build_busybox_rootfs(tmp_path_factory.mktemp("probe"))


@dataclass
class Store:
    root: Path
    runtime: object
    snapshotter: object
    chain_id: str
    made: list[str] = field(default_factory=list)
    make_spec: Callable[..., object] = None  # type: ignore[assignment]


def mounts_under(root: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(root))]


def live_pids(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            continue
        if raw[raw.rindex(b")") + 2:raw.rindex(b")") + 3] not in (b"Z", b"X"):
            out.append(pid)
    return out


@pytest.fixture
def store(tmp_path: Path, busybox_diff_id: str):
    """A fresh store root with the busybox layer unpacked and a ``make_spec(*args, **kw)`` factory."""
    from nbcontainer.errors import NotFoundError
    from nbcontainer.runtime import ContainerSpec, Runtime, cgroups
    from nbcontainer.snapshot import Snapshotter

    root = tmp_path / "store"
    snap = Snapshotter(root)
    snap.unpack(busybox_diff_id, "", busybox_diff_id, build_busybox_rootfs)
    rt = Runtime(root)
    s = Store(root, rt, snap, busybox_diff_id)

    def make_spec(*args: str, name: str | None = None, **kw: object) -> ContainerSpec:
        cid = secrets.token_hex(32)
        layer = snap.prepare(cid, busybox_diff_id)
        s.made.append(cid)
        return ContainerSpec(id=cid, name=name or f"t-{cid[:8]}", rootfs=snap.mount(cid),
                             merged=str(layer.merged), args=list(args) or ["true"],
                             env=["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], **kw)  # type: ignore[arg-type]

    s.make_spec = make_spec
    yield s

    pids: list[int] = []
    try:
        for cid in s.made:
            with contextlib.suppress(NotFoundError):  # the test may have deleted it already
                st = rt.state(cid)
                state_file = Path(st.bundle) / "state.json"
                if state_file.exists():
                    pids.append(json.loads(state_file.read_text()).get("shim_pid", 0))
                pids += [st.pid, *cgroups.procs(st.cgroups)]
                rt.delete(cid, force=True)
            snap.remove(cid)
    finally:
        pid_file = root / "run" / "runner.pid"
        if pid_file.exists():
            runner = int(pid_file.read_text())
            with contextlib.suppress(ProcessLookupError):
                os.kill(runner, signal.SIGTERM)
            pids.append(runner)
    deadline = time.monotonic() + 5
    while live_pids(pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert mounts_under(tmp_path) == []
    left = [p for cid in s.made for p in cgroups.paths(cid).values() if os.path.exists(p)]
    assert left == []
    assert live_pids(pids) == []
