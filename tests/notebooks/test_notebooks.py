"""Every notebook in notebooks/ executed by nbclient on a fresh store (root only: they run containers)."""

import os
import re
import shutil
import time
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
    started = time.monotonic()
    try:
        NotebookClient(nb, timeout=900, kernel_name="python3",
                       resources={"metadata": {"path": str(work)}}).execute()
        elapsed = time.monotonic() - started
        left = [c.name for c in Engine(root).ps(all=True)]
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
    if "isolation" in path.name:
        check_isolation(nb, elapsed, left)


def check_isolation(nb, elapsed: float, left: list[str]) -> None:
    """05-isolation: its tables say what the engine enforces, and it cleans up after itself, quickly."""
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    tables = [o["data"]["text/plain"] for o in outputs
              if 'class="dataframe"' in o.get("data", {}).get("text/html", "")]
    assert len(tables) >= 10, "each section shows at least one DataFrame"
    assert left == [], f"the notebook left containers behind: {left}"
    assert elapsed < 60, f"the notebook took {elapsed:.0f}s"

    def table(header: str) -> str:
        return next(t for t in tables if header in t)

    # 1. namespaces: five new ones, user/cgroup/time shared with the host
    ns = table("container inode")
    assert ns.count("False") == 5, ns
    # 3. cgroups: the limits on the host side, a refused fork, an OOM kill
    assert re.search(r"memory limit\s+\S*memory\.(limit_in_bytes|max)\s+67108864", text)
    assert re.search(r"pids limit\s+\S*pids\.max\s+20", text)
    assert "can't fork" in text
    oom = table("OOMKilled")
    assert re.search(r"exit code\s+137", oom) and re.search(r"State\.OOMKilled\s+True", oom)
    # 4. devices: mknod yes, open no, until --device adds the rule
    assert "can't open /tmp/loop-control: Operation not permitted" in text
    assert re.search(r"char\s+10:237\s+rwm\s+loop-control", text) and "\nopened" in text
    # 5. capabilities: Docker's 14, one more with --cap-add, none for --user 65534 / --cap-drop ALL
    caps = table("CapEff")
    assert re.search(r"root \(default\)\s+14 \(a80425fb\)", caps)
    assert re.search(r"--cap-add NET_ADMIN\s+15 \(a80435fb\)", caps)
    assert re.search(r"--user 65534\s+0 \(0\)", caps) and re.search(r"--cap-drop ALL\s+0 \(0\)", caps)
    # 6. seccomp: a filter by default, none when unconfined; refused calls; a custom profile
    seccomp = table("Seccomp_filters")
    assert re.search(r"(?m)^default\s+2\s+1$", seccomp), seccomp
    assert re.search(r"(?m)^seccomp=unconfined\s+0\s+0$", seccomp), seccomp
    assert "unshare(0x10000000): Operation not permitted" in table("system call")
    assert "can't create directory '/tmp/new': Operation not permitted" in table("seccomp=no-mkdir.json")
    # 7. no_new_privs only when asked
    nnp = table("NoNewPrivs")
    assert re.search(r"(?m)^default\s+0\s+2$", nnp) and re.search(r"(?m)^no-new-privileges\s+1\s+2$", nnp)
