"""Notebook 01 in a real JupyterLab, driven by Debian Chromium through playwright.

The fixture (``conftest.py``) starts JupyterLab on 127.0.0.1 over a tmp dir and its own store. The
test opens the tutorial notebook, runs every cell through JupyterLab's own ``notebook:run-all-cells``
command (the app is exposed as ``window.jupyterapp`` with ``--expose-app-in-browser``), waits for the
kernel to finish, then checks that DiffView and UnionMountView were drawn by the widget manager with the
expected paths, that no cell failed, and takes screenshots: into the test's tmp dir, or into the dir
named by ``NBC_SCREENSHOTS`` (relative to the repo; ``make screenshots`` refreshes ``docs/``), so a test
run leaves the work tree as it found it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

# Skips (not root, no /usr/bin/chromium, no /bin/busybox, no playwright) happen in the `lab` fixture.
REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = "01-images-and-containers.ipynb"
RUN_TIMEOUT = 180

# The open notebook panel, or null while it (or its kernel) is not ready yet.
_PANEL = """
() => {
  const app = window.jupyterapp;
  if (!app) return null;
  for (const w of app.shell.widgets('main')) {
    if (w.context && w.context.path && w.context.path.endsWith('NOTEBOOK') && w.content && w.sessionContext)
      return w;
  }
  return null;
}
""".replace("NOTEBOOK", NOTEBOOK)

_KERNEL_IDLE = """
() => {
  const w = (PANEL)();
  if (!w || !w.context.isReady || !w.sessionContext.isReady) return false;
  const k = w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle' && k.connectionStatus === 'connected';
}
""".replace("PANEL", _PANEL)

_STATE = """
() => {
  const w = (PANEL)();
  const k = w.sessionContext.session && w.sessionContext.session.kernel;
  const cells = [];
  const model = w.content.model;
  for (let i = 0; i < model.cells.length; i++) {
    const c = model.cells.get(i);
    if (c.type !== 'code') continue;
    const outs = c.outputs.toJSON();
    cells.push({count: c.executionCount, outputs: outs.length,
                errors: outs.filter(o => o.output_type === 'error')
                            .map(o => o.ename + ': ' + o.evalue)});
  }
  const busy = Array.from(document.querySelectorAll('.jp-Notebook .jp-InputPrompt'))
                    .filter(e => e.textContent.includes('*')).length;
  return {kernel: k ? k.status : 'none', cells, busy};
}
""".replace("PANEL", _PANEL)


def _run_all(page) -> None:
    """Clear old outputs, then run every cell with JupyterLab's own command."""
    page.evaluate("""async () => {
      const app = window.jupyterapp;
      await app.commands.execute('notebook:clear-all-cell-outputs');
      // Do not await the run: it resolves only when every cell is done; we poll instead.
      app.commands.execute('notebook:run-all-cells');
      return true;
    }""")


def _wait_done(page, log) -> dict:
    """Poll until every code cell has an execution count, none shows [*] and the kernel is idle."""
    deadline = time.monotonic() + RUN_TIMEOUT
    state: dict = {}
    idle_since = None
    while time.monotonic() < deadline:
        state = page.evaluate(_STATE)
        cells = state["cells"]
        if any(c["errors"] for c in cells):
            return state  # run-all stops at a failing cell: report it now
        done = (cells and all(c["count"] is not None for c in cells) and state["busy"] == 0
                and state["kernel"] == "idle" and cells[-1]["outputs"] > 0)
        if done:
            # widget views render asynchronously after the last reply: stay idle a moment
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since > 0.5:
                return state
        else:
            idle_since = None
        time.sleep(0.25)
    pytest.fail(f"the notebook did not finish in {RUN_TIMEOUT} s: {state}\nserver log:\n{log()}")


def test_tutorial_notebook_renders_its_widgets_in_jupyterlab(lab, page, tmp_path):
    page.goto(lab.url(f"lab/tree/{NOTEBOOK}"))
    try:
        page.wait_for_function(_KERNEL_IDLE, timeout=90_000, polling=250)
    except Exception as e:  # noqa: BLE001 - say why, with the server's log
        pytest.fail(f"the notebook's kernel never became idle ({e})\nserver log:\n{lab.log()}")
    # The file browser takes a third of the width: give the notebook the whole window.
    page.evaluate("""() => { const app = window.jupyterapp;
                            if (!app.shell.leftCollapsed) app.shell.collapseLeft(); }""")

    t0 = time.monotonic()
    _run_all(page)
    state = _wait_done(page, lab.log)
    elapsed = time.monotonic() - t0

    errors = [e for c in state["cells"] for e in c["errors"]]
    assert errors == [], f"cells failed: {errors}\nserver log:\n{lab.log()}"
    tracebacks = page.locator('.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]',
                              has_text="Traceback")
    assert tracebacks.count() == 0, tracebacks.first.inner_text()
    usage = page.locator('.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]',
                         has_text="UsageError")
    assert usage.count() == 0, usage.first.inner_text()

    # DiffView: drawn by the widget manager, with testfile marked A (added).
    diff = page.locator(".jp-OutputArea-output", has_text="changes in container tutorial")
    diff.first.wait_for(state="visible", timeout=30_000)
    assert diff.count() == 1
    added = diff.locator(".nbc-diff div", has_text="testfile")
    assert added.count() == 1, diff.inner_html()
    assert added.locator("b").inner_text().strip() == "A"
    assert "1 added" in diff.inner_text()

    # UnionMountView: the picked path and the layer it comes from.
    union = page.locator(".jp-OutputArea-output", has_text="union mount of tutorial")
    union.first.wait_for(state="visible", timeout=30_000)
    assert union.count() == 1
    text = union.inner_text()
    assert "/tmp/testfile" in text and "comes from layer" in text, text
    # ipywidgets Text field really holds the path (the view is live, not a static repr)
    assert union.locator("input").first.input_value() == "/tmp/testfile"

    # The widget models are the kernel's: no "Error displaying widget" / "model not found" anywhere.
    assert page.locator(".jp-OutputArea-output", has_text="Error displaying widget").count() == 0
    assert page.locator(".jp-OutputArea-output", has_text="Loading widget").count() == 0
    # LayerExplorer at the end rendered too
    assert page.locator(".jp-OutputArea-output", has_text="layers of testfile").count() == 1

    target = os.environ.get("NBC_SCREENSHOTS")  # absolute, or relative to the repo
    shots = REPO / target if target else tmp_path / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")  # no "unsaved" dot
    # Bring the DiffView cell to the top of the notebook viewport, then shoot the window.
    diff.evaluate("e => e.closest('.jp-Cell').scrollIntoView({block: 'start'})")
    page.wait_for_timeout(300)
    page.screenshot(path=str(shots / "screenshot-lab.png"), full_page=True)
    diff.screenshot(path=str(shots / "screenshot-diffview.png"))
    union.screenshot(path=str(shots / "screenshot-unionmountview.png"))
    assert (shots / "screenshot-lab.png").stat().st_size > 10_000
    print(f"notebook ran in {elapsed:.1f} s")
