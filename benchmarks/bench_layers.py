"""Layer apply/write throughput against their floors: GNU tar and plain Python tarfile.

Builds a seeded random tree (100 MB in 10k files by default), tars it with ``tar -c``, then takes
the median of three runs of each operation and prints a Markdown table. MB/s counts the bytes of
the uncompressed tar. The work happens in /dev/shm when there is one, so the numbers are the
CPU cost of each tool rather than the speed of the disk; ``--dir`` picks another place.
Run: ``.venv/bin/python benchmarks/bench_layers.py [--mb 100 --files 10000 --dir PATH]``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nbcontainer.layers import apply_layer, write_layer


def make_tree(root: Path, total_bytes: int, files: int, seed: int = 1) -> None:
    """Files in ~files/50 nested dirs; log-normal sizes scaled so they add up to total_bytes."""
    rng = random.Random(seed)
    weights = [rng.lognormvariate(0, 1.5) for _ in range(files)]
    scale = total_bytes / sum(weights)
    sizes = [int(w * scale) for w in weights]
    dirs = [root]
    for i in range(max(1, files // 50)):
        d = rng.choice(dirs) / f"d{i:04d}"
        d.mkdir()
        dirs.append(d)
    blob = rng.randbytes(max(sizes) + 4096)
    for i, size in enumerate(sizes):
        start = rng.randrange(4096)
        (rng.choice(dirs) / f"f{i:05d}.bin").write_bytes(blob[start:start + size])


def median_times(runs: dict[str, Callable[[Path], None]], scratch: Path, rounds: int) -> dict[str, float]:
    """Median wall time of each run; the runs take turns, so a busy moment hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(rounds):
        names = list(runs)
        for name in names[i % len(names):] + names[:i % len(names)]:
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir()
            t0 = time.perf_counter()
            runs[name](scratch)
            times[name].append(time.perf_counter() - t0)
    shutil.rmtree(scratch, ignore_errors=True)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--dir", default="/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-layers-", dir=args.dir) as tmp:
        base = Path(tmp)
        src, scratch, layer = base / "src", base / "scratch", base / "layer.tar"
        src.mkdir()
        make_tree(src, args.mb * 1_000_000, args.files)
        subprocess.run(["tar", "-C", str(src), "-cf", str(layer), "."], check=True)
        size = layer.stat().st_size

        def tar_x(out: Path) -> None:
            subprocess.run(["tar", "-C", str(out), "-xf", str(layer)], check=True)

        def tarfile_x(out: Path) -> None:
            with tarfile.open(layer) as tf:
                tf.extractall(out, filter="fully_trusted")
            with open(layer, "rb") as f:
                hashlib.file_digest(f, "sha256")

        def ours_x(out: Path) -> None:
            apply_layer(layer, str(out))

        def tar_c(out: Path) -> None:
            subprocess.run(["tar", "-C", str(src), "-cf", str(out / "o.tar"), "."], check=True)

        def tarfile_c(out: Path) -> None:
            with tarfile.open(out / "o.tar", "w", format=tarfile.PAX_FORMAT) as tf:
                tf.add(src, arcname=".")
            with open(out / "o.tar", "rb") as f:
                hashlib.file_digest(f, "sha256")

        def ours_c(out: Path) -> None:
            with open(out / "o.tar", "wb") as f:
                write_layer(str(src), f)

        rows = []
        for op, ours, floors in (
            ("apply_layer", ours_x, {"tar -x": tar_x, "tarfile extractall + sha256": tarfile_x}),
            ("write_layer", ours_c, {"tar -c": tar_c, "tarfile add + sha256": tarfile_c}),
        ):
            t = median_times({op: ours, **floors}, scratch, args.runs)
            for name in floors:
                rows.append((f"{op} vs {name}", size / t[op] / 1e6, size / t[name] / 1e6, t[name] / t[op]))

    print(f"{args.files} files, {size / 1e6:.0f} MB tar, in {args.dir or tempfile.gettempdir()}, "
          f"median of {args.runs} interleaved runs, load average {os.getloadavg()[0]:.1f}\n")
    print("| operation | ours MB/s | floor MB/s | ratio |")
    print("|---|---:|---:|---:|")
    for name, ours_mbs, floor_mbs, ratio in rows:
        print(f"| {name} | {ours_mbs:.0f} | {floor_mbs:.0f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
