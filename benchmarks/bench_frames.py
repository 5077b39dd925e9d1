"""files() of the Debian minbase image and opening LayerExplorer on it, next to ``tar -tvf`` of the
same layers in the same run. Needs mmdebstrap (or ``--root`` of a store that has debian:bookworm)."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _peers import median, table

from nbcontainer import Engine
from nbcontainer.analysis import frames
from nbcontainer.notebook.widgets import LayerExplorer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", help="a store that already has the image")
    ap.add_argument("--image", default="debian:bookworm")
    a = ap.parse_args()
    work = None
    if a.root:
        engine = Engine(a.root)
    else:
        work = tempfile.mkdtemp(prefix="nbc-bench-frames-")
        engine = Engine(work)
        engine.bootstrap(a.image.replace("debian:", "debian:") if a.image.startswith("debian") else a.image)
    try:
        img = engine.image(a.image)
        blobs = [str(engine.store.content.path(d.digest)) for d in img.manifest.layers]
        n = len(frames.to_frame("files", engine.files(a.image)))
        t_files = median(lambda: frames.to_frame("files", engine.files(a.image)), runs=5)
        t_explorer = median(lambda: LayerExplorer(engine, a.image), runs=3)
        t_tar = median(lambda: [subprocess.run(["tar", "-tvf", b], capture_output=True, check=True)
                                for b in blobs], runs=5)
        rows = [
            [f"files() ({n} entries)", f"{t_files * 1000:.0f} ms", f"{t_tar * 1000:.0f} ms",
             f"{t_files / t_tar:.2f}x"],
            ["LayerExplorer(...)", f"{t_explorer * 1000:.0f} ms", f"{t_tar * 1000:.0f} ms",
             f"{t_explorer / t_tar:.2f}x"],
        ]
        print(table(["work", "ours", "tar -tvf of the layers", "ratio"], rows))
    finally:
        if work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
