"""Save and load of images: nbcontainer next to podman (and `tar -x` for Debian), same run.

    .venv/bin/python benchmarks/bench_save_load.py
    BENCH_DEBIAN_TAR=/path/to/minbase.tar .venv/bin/python benchmarks/bench_save_load.py

A 100 MB image (100 files of random data, one layer) is built in a temp store, saved and loaded
(into a fresh store each time); podman gets the same image through ``podman load`` of our archive
and is timed on ``podman save`` / ``podman load`` (its storage in temp dirs, vfs driver). With
``BENCH_DEBIAN_TAR`` (an ``mmdebstrap --variant=minbase bookworm`` tarball), that rootfs is wrapped
as a one-layer image and loaded too, next to ``tar -x`` of it. Medians of 3; a Markdown table.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _peers import Podman, median

from nbcontainer.oci import MT_OCI_LAYER, Descriptor, History, ImageConfig
from nbcontainer.store import Image, ImageStore
from nbcontainer.transfer.archive.sources import load, save

try:
    from nbcontainer.engine import Engine
except ImportError:  # the engine is optional here: the store-level rows still run
    Engine = None  # type: ignore[assignment,misc]

RUNS = 3


def median_time(fn: Callable[[], object], before: Callable[[], object] | None = None) -> float:
    return median(fn, RUNS, before)


def build_random_image(store: ImageStore, work: Path, mb: int = 100, files: int = 100) -> Image:
    layer = work / "layer.tar"
    per_file = mb * (1 << 20) // files
    with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as tar:
        for i in range(files):
            src = work / "f"
            src.write_bytes(os.urandom(per_file))
            tar.add(src, arcname=f"data/file{i:03d}", recursive=False)
        (work / "f").unlink()
    return wrap_layer(store, layer, "bench:100mb", "random data")


def wrap_layer(store: ImageStore, layer: Path, name: str, created_by: str) -> Image:
    digest = store.content.put_file(layer)
    desc = Descriptor(MT_OCI_LAYER, digest, store.content.size(digest))
    config = ImageConfig(architecture="amd64", created="2024-05-01T10:00:00Z", config={"Cmd": ["/bin/sh"]},
                         diff_ids=(digest,), history=(History(created="2024-05-01T10:00:00Z",
                                                              created_by=created_by),))
    return store.add_image(config, [desc], name)


def bench_image(work: Path, store: ImageStore, image: Image, name: str, label: str,
                podman: Podman | None, rows: list[tuple[str, float, float | None, str]]) -> Path:
    out = work / f"{label}.tar"
    ours_save = median_time(lambda: save(store, [(image, [name])], out),
                            before=lambda: out.unlink(missing_ok=True))
    n = iter(range(1000))

    def fresh() -> ImageStore:
        return ImageStore(work / f"load-{label}-{next(n)}")

    stores: list[ImageStore] = []
    ours_load = median_time(lambda: load(stores[-1], out), before=lambda: stores.append(fresh()))
    # What `load` does for a user: the store load above plus unpacking the layers (as podman does).
    engines: list = []
    engine_load = median_time(lambda: engines[-1].load(out), before=lambda: engines.append(
        Engine(work / f"engine-{label}-{next(n)}"))) if Engine is not None else None
    for root in [s.root for s in stores] + [e.root for e in engines]:
        shutil.rmtree(root, ignore_errors=True)
    peer_save = peer_load = None
    if podman is not None:
        podman("load", "-i", str(out))
        theirs = work / f"{label}-podman.tar"
        peer_save = median_time(lambda: podman("save", "-o", str(theirs), name),
                                before=lambda: theirs.unlink(missing_ok=True))
        podman.rmi(name)
        peer_load = median_time(lambda: podman("load", "-i", str(theirs)), before=lambda: podman.rmi(name))
        podman.rmi(name)
        theirs.unlink(missing_ok=True)
    rows.append((f"save {label}", ours_save, peer_save, "podman save"))
    rows.append((f"load {label} (store: verify + copy)", ours_load, peer_load, "podman load"))
    if engine_load is not None:
        rows.append((f"load {label} (Engine.load: + unpack)", engine_load, peer_load, "podman load"))
    return out


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="nbc-bench-save-load-"))
    podman = Podman(work, driver="vfs") if Podman.available() and os.geteuid() == 0 else None
    rows: list[tuple[str, float, float | None, str]] = []
    try:
        store = ImageStore(work / "store")
        image = build_random_image(store, work)
        bench_image(work, store, image, "bench:100mb", "100 MB image", podman, rows)

        debian = os.environ.get("BENCH_DEBIAN_TAR")
        if debian and shutil.which("mmdebstrap") and Path(debian).is_file():
            image = wrap_layer(store, Path(debian), "bench:debian", "mmdebstrap --variant=minbase bookworm")
            archive = bench_image(work, store, image, "bench:debian", "Debian minbase", podman, rows)
            target = work / "rootfs"
            tar_x = median_time(
                lambda: subprocess.run(["tar", "-xf", debian, "-C", str(target)], check=True),
                before=lambda: (shutil.rmtree(target, ignore_errors=True), target.mkdir()))
            for work_name, ours, _, _ in [r for r in rows if r[0].startswith("load Debian")]:
                rows.append((work_name, ours, tar_x, "tar -x of the rootfs"))
            archive.unlink()
        elif debian:
            print(f"(skipping Debian: need mmdebstrap and the file {debian})\n")
    finally:
        if podman is not None:
            podman.close()
        shutil.rmtree(work, ignore_errors=True)

    print("| work | nbcontainer | peer | peer time | ratio |")
    print("|---|---:|---|---:|---:|")
    for work_name, ours, peer, peer_name in rows:
        if peer is None:
            print(f"| {work_name} | {ours:.3f} s | {peer_name} | n/a | n/a |")
        else:
            print(f"| {work_name} | {ours:.3f} s | {peer_name} | {peer:.3f} s | {ours / peer:.2f}× |")


if __name__ == "__main__":
    main()
