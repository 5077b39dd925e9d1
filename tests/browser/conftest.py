"""Fixtures for the browser test: a throwaway JupyterLab server and Debian Chromium driven by playwright.

The server runs on 127.0.0.1 with its own token, root dir, store root (``NBCONTAINER_ROOT``), config,
settings, workspaces, runtime and IPython dirs, all under the test's tmp dir, so nothing global is
touched. The kernel spec and the widget lab extension are still found in the venv's data dir
(``sys.prefix/share/jupyter``), which we leave alone.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from nbc_testing import alive

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
BUSYBOX = "/bin/busybox"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the tutorial notebook runs containers: needs root"
    if not os.path.exists(CHROMIUM):
        return f"Debian chromium is not installed ({CHROMIUM}): apt-get install chromium"
    if not os.path.exists(BUSYBOX):
        return f"busybox-static is not installed ({BUSYBOX})"
    if importlib.util.find_spec("playwright") is None:
        return "playwright (python) is not importable"
    if importlib.util.find_spec("jupyterlab") is None:
        return "jupyterlab is not installed"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (via /proc/<pid>/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except FileNotFoundError:
            continue
        for t in tasks:
            try:
                with open(f"/proc/{p}/task/{t}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except (FileNotFoundError, ProcessLookupError):
                continue
            out += kids
            todo += kids
    return out


class Lab:
    """A running JupyterLab: ``url(path)`` builds a tokenized URL, ``api`` calls its REST API."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.work = base / "work"
        self.store = base / "store"
        self.port = _free_port()
        self.token = secrets.token_hex(16)
        self.log_path = base / "jupyterlab.log"
        self.proc: subprocess.Popen | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}?token={self.token}"

    def api(self, method: str, path: str, timeout: float = 10) -> object:
        req = urllib.request.Request(self.url(path), method=method)
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read()
        return json.loads(body) if body else None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except FileNotFoundError:
            return ""

    def start(self) -> None:
        cfg = self.base / "jupyter-config"
        (cfg / "labconfig").mkdir(parents=True)
        # The announcements plugin pops up a "news?" toast that covers screenshots: disable it here,
        # for this server only (not with `jupyter labextension disable`, which edits global config).
        (cfg / "labconfig" / "page_config.json").write_text(json.dumps(
            {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
        settings = self.base / "lab-settings"
        # Attach every cell to the DOM, so the widgets are there to find wherever the notebook is scrolled.
        tracker = settings / "@jupyterlab" / "notebook-extension"
        tracker.mkdir(parents=True)
        (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
        for d in ("lab-workspaces", "jupyter-runtime", "ipython"):
            (self.base / d).mkdir()
        env = dict(os.environ)
        env.update(
            NBCONTAINER_ROOT=str(self.store),
            JUPYTER_CONFIG_DIR=str(cfg),
            JUPYTERLAB_SETTINGS_DIR=str(settings),
            JUPYTERLAB_WORKSPACES_DIR=str(self.base / "lab-workspaces"),
            JUPYTER_RUNTIME_DIR=str(self.base / "jupyter-runtime"),
            IPYTHONDIR=str(self.base / "ipython"),
            PYTHONUNBUFFERED="1",
        )
        env.pop("JUPYTER_DATA_DIR", None)  # keep finding the venv's kernel spec and jupyterlab_widgets
        cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
               f"--port={self.port}", "--port-retries=0", f"--ServerApp.token={self.token}",
               f"--ServerApp.root_dir={self.work}", "--allow-root", "--expose-app-in-browser",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
               "--ServerApp.open_browser=False", "--ServerApp.terminals_enabled=False"]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=self.work, env=env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.proc.returncode}:\n{self.log()}")
            try:
                self.api("GET", "api/status", timeout=2)
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"jupyter lab did not answer /api/status in 60 s:\n{self.log()}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is None:
            return
        pid = self.proc.pid
        if self.proc.poll() is None:
            # Shut the kernels down through the server first: that is the clean way to end them.
            with contextlib.suppress(urllib.error.URLError, OSError, ValueError):
                for k in self.api("GET", "api/kernels"):  # type: ignore[union-attr]
                    with contextlib.suppress(urllib.error.URLError, OSError):
                        self.api("DELETE", f"api/kernels/{k['id']}", timeout=30)
        # Remember what the server started (kernels, and what they left running) before it goes.
        left = _descendants(pid)
        if self.proc.poll() is None:
            os.kill(pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        # The nbcontainer runner (a descendant of the kernel) is stopped by cleanup_engine; kernels
        # the server did not manage to end are ended here, by pid.
        runner_file = self.store / "run" / "runner.pid"
        runner = int(runner_file.read_text()) if runner_file.exists() else None
        deadline = time.monotonic() + 10
        while [p for p in left if p != runner and alive(p)] and time.monotonic() < deadline:
            time.sleep(0.05)
        for p in left:
            if p != runner and alive(p):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)


@pytest.fixture
def lab():
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    from nbc_testing import cleanup_engine

    from nbcontainer import Engine

    # A short base dir rather than tmp_path: the store's paths show in the widgets and the screenshot.
    base = Path(tempfile.mkdtemp(prefix="nbc-lab-", dir="/tmp"))
    server = Lab(base)
    server.work.mkdir()
    shutil.copy(REPO / "notebooks" / "01-images-and-containers.ipynb", server.work)
    try:
        server.start()
        yield server
    finally:
        try:
            server.stop()
        finally:
            cleanup_engine(Engine(server.store), base)  # asserts no mounts, cgroups, processes left
        shutil.rmtree(base, ignore_errors=True)  # only reached once nothing is mounted under it


@pytest.fixture
def page(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
            pg = context.new_page()
            pg.set_default_timeout(60_000)
            yield pg
            context.close()
        finally:
            browser.close()
