"""podman as a peer, in its own storage: ``--root``/``--runroot`` in a temp dir, vfs, cgroupfs, runc.

``CONTAINERS_CONF`` points at the config PEERS.md asks for on this machine, so nothing leaks into
the host's container storage. :func:`podman_session` (or a fixture from :func:`podman_fixture`)
removes the containers and images, resets the storage, unmounts what is left under its root and
removes its directories, also when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
"""


class Podman:
    """``podman(*args)`` runs podman in this storage and returns stdout, asserting it succeeded;
    ``podman.run(*args)`` returns the completed process whatever its exit code."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "root"
        base.mkdir(parents=True, exist_ok=True)
        self.runroot = tempfile.mkdtemp(prefix="nbcp-")  # podman refuses a runroot longer than 50 chars
        conf = base / "containers.conf"
        conf.write_text(CONTAINERS_CONF)
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf), "TMPDIR": str(base)}
        self.argv = ["podman", "--root", str(self.root), "--runroot", self.runroot,
                     "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"]

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.argv, *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def __call__(self, *args: str) -> str:
        proc = self.run(*args)
        assert proc.returncode == 0, (
            f"podman {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout

    def close(self) -> None:
        for args in (["rm", "-af"], ["rmi", "-af"], ["system", "reset", "-f"]):
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.run(*args, timeout=120)
        dirs = (str(self.root), self.runroot)
        with open("/proc/self/mountinfo") as f:
            left = [m for m in (line.split()[4] for line in f)
                    if m in dirs or m.startswith(tuple(d + "/" for d in dirs))]
        for mountpoint in reversed(left):
            subprocess.run(["umount", "-l", mountpoint], capture_output=True, check=False)
        shutil.rmtree(self.runroot, ignore_errors=True)
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def podman_session(base: Path) -> Iterator[Podman]:
    """A :class:`Podman` over ``base``, closed on exit; skips if podman is missing."""
    if os.geteuid() != 0:
        pytest.skip("podman's storage here needs root")
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (apt-get install -y podman)")
    p = Podman(base)
    try:
        yield p
    finally:
        p.close()


def podman_fixture(scope: str = "function"):
    """A ``podman`` fixture of ``scope``: assign it to a module-level name ``podman``."""

    @pytest.fixture(scope=scope)  # type: ignore[call-overload]
    def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
        with podman_session(tmp_path_factory.mktemp("podman")) as p:
            yield p

    return podman
