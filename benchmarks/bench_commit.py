"""Commit of 1 MB and 100 MB of changes: ours, the floor (Python tarfile + sha256 of the same upper
dir) and ``podman commit`` in the same run. Run as root: ``.venv/bin/python benchmarks/bench_commit.py``."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _peers import Podman, median, table

from nbcontainer import Engine


class _HashWriter:
    def __init__(self, f):
        self.f, self.h = f, hashlib.sha256()

    def write(self, b):
        self.h.update(b)
        return self.f.write(b)


def floor(upper: str, out: str) -> None:
    with open(out, "wb") as f:
        w = _HashWriter(f)
        with tarfile.open(fileobj=w, mode="w|", format=tarfile.PAX_FORMAT) as tf:
            tf.add(upper, arcname="", recursive=True)


def bench_one(engine: Engine, podman: Podman | None, work: Path, mb: int) -> list[str]:
    """One table row: commit ``mb`` × 10 × 100 kB of fresh files, ours against the floor and podman."""
    script = ("mkdir /data && for i in $(seq 10); do "
              f"dd if=/dev/urandom of=/data/f$i bs=100k count={mb} 2>/dev/null; done")
    name = f"c{mb}"
    engine.run("busybox", ["sh", "-c", script], name=name)
    upper = str(engine.snapshots.container_layer(engine.container(name).id).upper)

    def drop() -> None:
        with contextlib.suppress(Exception):  # not there on the first run
            engine.rmi(f"bench:{mb}")

    t_ours = median(lambda: engine.commit(name, f"bench:{mb}"), before=drop)
    t_floor = median(lambda: floor(upper, str(work / "floor.tar")))
    t_podman = None
    if podman:
        podman("run", "--network", "none", "--name", name, "bbox", "sh", "-c", script)

        try:
            t_podman = median(lambda: podman("commit", name, f"bench{mb}"),
                              before=lambda: podman("rmi", f"bench{mb}", check=False))
        except Exception as err:  # noqa: BLE001 - report, do not hide
            print(f"podman commit failed: {err}", file=sys.stderr)
    engine.rm(name)
    return [f"commit {mb} MB", f"{t_ours * 1000:.0f} ms", f"{t_floor * 1000:.0f} ms",
            f"{t_ours / t_floor:.2f}x",
            f"{t_podman * 1000:.0f} ms" if t_podman else "n/a",
            f"{t_podman / t_ours:.2f}x" if t_podman else "n/a"]


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="nbc-bench-commit-"))
    engine = Engine(work / "store")
    engine.bootstrap("busybox")
    podman = Podman(work) if Podman.available() else None
    if podman:
        tar = work / "busybox.tar"
        img = engine.image("busybox")
        tar.write_bytes(engine.store.content.read(img.manifest.layers[0].digest))
        podman("import", str(tar), "bbox")
    rows = []
    try:
        for mb in (1, 100):
            rows.append(bench_one(engine, podman, work, mb))
    finally:
        if podman:
            podman.close()
        for s in engine.runtime.list():
            engine.rm(s.id, force=True)
        pid = engine.root / "run" / "runner.pid"
        if pid.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid.read_text()), 15)
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    print(table(["work", "ours", "floor (tarfile+sha256)", "ours/floor", "podman commit", "podman/ours"],
                rows))

if __name__ == "__main__":
    main()
