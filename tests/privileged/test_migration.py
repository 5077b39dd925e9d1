"""A store made by the previous version (main before the "One house" wave, commit 573daee) opens
with this one: its format version is written, its root tightened, its images listed and run, and a
container the old version left running is listed, stopped and removed."""

from __future__ import annotations

import io
import os
import signal
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

PREVIOUS = "573daee"
REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="runs containers: needs root"),
    pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="busybox-static is not installed"),
]


@pytest.fixture
def previous_code(tmp_path: Path) -> Path:
    """The package as it was at PREVIOUS, unpacked from git (skipped only outside a git clone)."""
    proc = subprocess.run(["git", "-C", str(REPO), "archive", PREVIOUS, "nbcontainer"],
                          capture_output=True, check=False)
    if proc.returncode:
        pytest.skip(f"no git history for {PREVIOUS} here: {proc.stderr.decode().strip()}")
    dest = tmp_path / "previous"
    dest.mkdir()
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def old(code: Path, script: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(code)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          cwd=str(code), check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_a_store_made_by_the_previous_version_opens_lists_runs_and_cleans_up(previous_code, tmp_path):
    from nbc_testing import alive, cleanup_engine

    from nbcontainer import Engine

    root = tmp_path / "store"
    out = old(previous_code, f"""
import nbcontainer, os
assert nbcontainer.__file__.startswith({str(previous_code)!r}), nbcontainer.__file__
from nbcontainer import Engine
e = Engine({str(root)!r})
e.bootstrap("busybox")
c = e.run("busybox", ["sleep", "300"], detach=True, name="leftover", network="none")
print(c.id, open(os.path.join({str(root)!r}, "run", "runner.pid")).read().strip())
""")
    cid, runner = out.split()
    os.chmod(root, 0o755)  # as an older version could leave it
    os.kill(int(runner), signal.SIGTERM)  # the old runner goes (the container and its shim stay)
    deadline = time.monotonic() + 10
    while alive(int(runner)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (root / "store-version").exists()

    engine = Engine(root)
    try:
        assert (root / "store-version").read_text().strip().isdigit()
        assert stat.S_IMODE(root.stat().st_mode) == 0o700
        assert [r.repository for r in engine.images()] == ["busybox"]
        [row] = engine.ps(all=True)
        assert row.id == cid and row.name == "leftover" and row.state == "running"
        res = engine.run("busybox", ["echo", "new"], remove=True, network="none")
        assert res.exit_code == 0 and res.stdout == b"new\n"
        engine.stop("leftover", timeout=1)
        assert engine.container("leftover").status == "exited"
        engine.rm("leftover")
        assert engine.ps(all=True) == []
    finally:
        cleanup_engine(engine, tmp_path)
