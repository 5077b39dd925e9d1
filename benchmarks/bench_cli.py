"""Start-up of the CLI's listing verbs: ``ps -a``, ``images`` and ``inspect busybox``, ours next to podman's.

Each command is a fresh process, as a person types it: ours through the console script next to this
interpreter (``.venv/bin/nbcontainer``, else ``python -m nbcontainer``), podman with its storage in a
temp dir (``CONTAINERS_CONF``, ``--root``/``--runroot``, overlay, cgroupfs, runc). Both stores hold one
busybox image, the same rootfs (ours from ``Engine.bootstrap("busybox")``, podman's from
``podman import`` of that layer), and one created container. Python writes its bytecode cache (into
the temp dir, ``PYTHONPYCACHEPREFIX``) as an installed package has one, even where the environment
says ``PYTHONDONTWRITEBYTECODE``. Medians of N runs after warm-up runs, with hyperfine if installed,
else a Python loop. Prints a Markdown table and removes everything it made.

Run as root: ``.venv/bin/python benchmarks/bench_cli.py [N]``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _peers import Podman, table

from nbcontainer import Engine

WARMUP = 3
GOAL = 1.5  # at most this many times podman's time
VERBS = (("ps -a", ["ps", "-a"]), ("images", ["images"]), ("inspect busybox", ["inspect", "busybox"]))


def our_argv(root: Path) -> list[str]:
    script = Path(sys.executable).parent / "nbcontainer"
    base = [str(script)] if script.exists() else [sys.executable, "-m", "nbcontainer"]
    return [*base, "--root", str(root)]


def check(argv: list[str], env: dict[str, str], expect: str) -> None:
    """Run once (this also writes the bytecode cache) and refuse to time a failing command."""
    res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    if res.returncode != 0 or expect not in res.stdout:
        said = (res.stderr or res.stdout).strip()
        raise RuntimeError(f"{shlex.join(argv)} failed ({res.returncode}): {said}")


def medians_ms(commands: list[list[str]], env: dict[str, str], runs: int, work: Path) -> list[float]:
    """The median wall time of each command, in ms."""
    if shutil.which("hyperfine"):
        out = work / "hyperfine.json"
        subprocess.run(["hyperfine", "--shell=none", "--style", "none", "--warmup", str(WARMUP),
                        "--runs", str(runs), "--export-json", str(out), *map(shlex.join, commands)],
                       env=env, check=True, capture_output=True, timeout=3600)
        return [r["median"] * 1000 for r in json.loads(out.read_text())["results"]]
    found = []
    for argv in commands:
        times = []
        for i in range(WARMUP + runs):
            t = time.perf_counter()
            subprocess.run(argv, env=env, capture_output=True, check=True, timeout=120)
            if i >= WARMUP:
                times.append(time.perf_counter() - t)
        found.append(statistics.median(times) * 1000)
    return found


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("bench_cli.py needs root (podman's storage and our container)")
    if not Podman.available():
        sys.exit("bench_cli.py needs podman and runc (apt-get install -y podman runc)")
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    work = Path(tempfile.mkdtemp(prefix="nbc-bench-cli-"))
    engine = Engine(work / "store")
    podman = Podman(work)
    try:
        img = engine.bootstrap("busybox")
        engine.create("busybox", ["true"], name="bench", network="none")
        tar = work / "busybox.tar"
        tar.write_bytes(engine.store.content.read(img.manifest.layers[0].digest))
        podman("import", str(tar), "busybox:latest")
        podman("create", "--network", "none", "--name", "bench", "busybox", "true")

        env = {k: v for k, v in podman.env.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
        ours = [our_argv(engine.root) + args for _, args in VERBS]
        theirs = [podman.argv + args for _, args in VERBS]
        for argv, expect in zip(ours + theirs, ("bench", "busybox", "Id") * 2, strict=True):
            check(argv, env, expect)
        floor = [sys.executable, "-c", "pass"]
        times = medians_ms([*ours, *theirs, floor], env, runs, work)
        mine, peer = times[:len(VERBS)], times[len(VERBS):-1]

        rows = [[name, f"{a:.1f} ms", f"{b:.1f} ms", f"{a / b:.2f}x", "met" if a / b <= GOAL else "not met"]
                for (name, _), a, b in zip(VERBS, mine, peer, strict=True)]
        how = "hyperfine" if shutil.which("hyperfine") else "a Python loop"
        print(f"\nMedian of {runs} runs after {WARMUP} warm-up runs ({how}); each store holds one image and "
              "one created container.\n")
        print(table(["what", "nbcontainer", "podman", "ratio", f"goal (≤ {GOAL}×)"], rows))
        print(f"\nThe interpreter alone (`python -c pass`, site included): {times[-1]:.1f} ms.")
    finally:
        with contextlib.suppress(Exception):
            for s in engine.runtime.list():
                engine.rm(s.id, force=True)
        pid = engine.root / "run" / "runner.pid"
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            os.kill(int(pid.read_text()), 15)
        podman.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
