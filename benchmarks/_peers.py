"""Helpers shared by the benchmarks: timing, and a podman with its storage in a temp dir."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
"""


def median(fn: Callable[[], object], runs: int = 3, before: Callable[[], object] | None = None) -> float:
    times = []
    for _ in range(runs):
        if before:
            before()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class Podman:
    """podman with its own storage (overlay driver) and the config this machine needs (PEERS.md)."""

    def __init__(self, work: Path, driver: str = "overlay") -> None:
        self.base = Path(tempfile.mkdtemp(prefix="nbcp-", dir=work))
        self.runroot = tempfile.mkdtemp(prefix="nbcp-run-")
        (self.base / "containers.conf").write_text(CONTAINERS_CONF)
        self.env = {**os.environ, "CONTAINERS_CONF": str(self.base / "containers.conf"),
                    "TMPDIR": str(self.base)}
        self.argv = ["podman", "--root", str(self.base / "root"), "--runroot", self.runroot,
                     "--storage-driver", driver, "--cgroup-manager", "cgroupfs"]

    @staticmethod
    def available() -> bool:
        return shutil.which("podman") is not None and shutil.which("runc") is not None

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([*self.argv, *args], env=self.env, check=check, capture_output=True,
                              timeout=600)

    def rmi(self, name: str) -> None:
        subprocess.run([*self.argv, "rmi", "-f", name], env=self.env, capture_output=True, timeout=600,
                       check=False)

    def close(self) -> None:
        for args in (["rm", "-af"], ["rmi", "-af"], ["system", "reset", "-f"]):
            subprocess.run([*self.argv, *args], env=self.env, capture_output=True, timeout=600, check=False)
        subprocess.run(["umount", "-R", "-l", str(self.base / "root")], capture_output=True, check=False)
        shutil.rmtree(self.base, ignore_errors=True)
        shutil.rmtree(self.runroot, ignore_errors=True)


def table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)
