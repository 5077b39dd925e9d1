"""Every notebook in notebooks/ executed by nbclient on a fresh store (root only: they run containers)."""

import os
import shutil
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
WIDGET = "application/vnd.jupyter.widget-view+json"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the notebooks run containers: needs root"),
    pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="busybox-static is not installed"),
]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_clean_and_shows_its_widgets(path, tmp_path, monkeypatch):
    import nbformat
    from nbc_testing import cleanup_engine
    from nbclient import NotebookClient

    from nbcontainer import Engine

    if "layer-analysis" in path.name and not shutil.which("mmdebstrap"):
        pytest.skip("mmdebstrap is not installed")
    root = tmp_path / "store"
    monkeypatch.setenv("NBCONTAINER_ROOT", str(root))
    work = tmp_path / "work"
    work.mkdir()
    nb = nbformat.read(path, as_version=4)
    try:
        NotebookClient(nb, timeout=900, kernel_name="python3",
                       resources={"metadata": {"path": str(work)}}).execute()
    finally:
        cleanup_engine(Engine(root), tmp_path)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
    widgets = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
               if WIDGET in o.get("data", {})]
    if "images-and-containers" in path.name:
        assert len(widgets) >= 3  # DiffView, UnionMountView, LayerExplorer
        text = "".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
                       for c in nb.cells if c.cell_type == "code" for o in c.outputs)
        assert "this is a testfile" in text and "Loaded image: testfile:latest" in text
