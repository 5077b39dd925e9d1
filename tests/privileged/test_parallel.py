"""Many containers at once, as people start them from several terminals: no name collisions, and
listing never trips over containers that appear and vanish."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root"),
    pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="busybox-static is not installed"),
]

RUNS = 100


def test_a_hundred_parallel_runs_without_names_all_succeed_while_ps_lists(busybox_engine):
    root = str(busybox_engine.root)
    cli = [sys.executable, "-m", "nbcontainer", "--root", root]
    busybox_engine.runtime.runner_pid()  # one runner for all, started before the rush
    runs = [subprocess.Popen([*cli, "run", "--rm", "--network", "none", "busybox", "true"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(RUNS)]
    listings = []
    while any(p.poll() is None for p in runs):
        listings.append(subprocess.run([*cli, "ps", "-a"], capture_output=True, text=True, check=False))
    results = [(p.wait(timeout=300), p.stderr.read().decode()) for p in runs]
    for p in runs:
        p.stdout.close()
        p.stderr.close()
    failed = [err for code, err in results if code != 0]
    assert failed == [], f"{len(failed)} of {RUNS} runs failed, e.g. {failed[0]!r}"
    assert listings and all(r.returncode == 0 and "Traceback" not in r.stderr for r in listings), \
        [r.stderr for r in listings if r.returncode or "Traceback" in r.stderr][:1]
    assert busybox_engine.ps(all=True) == []


def test_generated_names_are_unique_and_look_like_dockers(busybox_engine):
    made = [busybox_engine.create("busybox", ["true"], network="none") for _ in range(20)]
    try:
        names = [s.name for s in made]
        assert len(set(names)) == 20
        assert all(n.count("_") == 1 and n.replace("_", "").isalnum() for n in names), names
    finally:
        for s in made:
            busybox_engine.rm(s.id, force=True)
