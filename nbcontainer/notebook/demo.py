"""``make demo``: bootstrap the base image, show it, and run the tutorial notebook headless.

The notebook runs in ``<store root>/demo-work`` and its executed HTML lands there too: nothing is
written next to the notebook sources.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from nbcontainer.cli import main as cli


def run_notebook(path: Path, out_html: Path, workdir: Path) -> None:
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(workdir)}}).execute()
    body, _ = HTMLExporter().from_notebook_node(nb)
    out_html.write_text(body)
    print(f"executed {path} -> {out_html}")


def main() -> int:
    steps = [["bootstrap", "busybox"], ["images"], ["history", "busybox"], ["layers", "busybox"]]
    for argv in steps:
        print(f"$ nbcontainer {' '.join(argv)}", flush=True)
        rc = cli(argv)
        if rc:
            return rc
        print(flush=True)
    nb = Path(__file__).resolve().parents[2] / "notebooks" / "01-images-and-containers.ipynb"
    if not nb.exists():  # an installed package ships no notebooks
        print(f"no tutorial notebook at {nb}: not running it")
    elif os.environ.get("NBCONTAINER_DEMO_NOTEBOOK", "1") == "1":
        from nbcontainer.engine import Engine

        engine = Engine()
        work = engine.root / "demo-work"
        work.mkdir(exist_ok=True)
        try:
            run_notebook(nb, work / nb.with_suffix(".html").name, work)
        finally:
            _stop_runner(engine)
    return 0


def _stop_runner(engine: object) -> None:
    """The demo started a runner for its store; stop it (by the pid it recorded) when done."""
    import signal

    pid_file = engine.root / "run" / "runner.pid"  # type: ignore[attr-defined]
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        os.kill(int(pid_file.read_text()), signal.SIGTERM)


if __name__ == "__main__":
    sys.exit(main())
