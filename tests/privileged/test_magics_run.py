"""Container magics through a real InteractiveShell (root only)."""

import os

import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and overlay mounts"),
    pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="busybox-static is not installed"),
]


@pytest.fixture
def ip(busybox_engine, tmp_path_factory):
    os.environ.setdefault("IPYTHONDIR", str(tmp_path_factory.mktemp("ipython")))
    from nbcontainer.notebook.magics import ContainerMagics

    shell = InteractiveShell.instance()
    shell.register_magics(ContainerMagics(shell, engine=busybox_engine))
    return shell


def test_cell_magic_runs_the_cell_as_a_script_and_streams_output(ip, busybox_engine, capfd):
    ip.run_cell_magic("container", "run --rm busybox",
                      "echo one\nfor i in 1 2; do echo line$i; done\nhostname >&2\n")
    out, err = capfd.readouterr()
    assert "one\nline1\nline2\n" in out and err.strip()
    assert busybox_engine.ps(all=True) == []


def test_cell_magic_reports_a_failing_exit_code(ip, capfd):
    ip.run_cell_magic("container", "run --rm busybox", "echo before; exit 4\n")
    out, err = capfd.readouterr()
    assert "before" in out and "container exited with code 4" in err


def test_run_ps_top_diff_through_magics(ip, busybox_engine):
    ip.run_line_magic("container", "run -d --name m1 busybox sh -c 'echo x > /tmp/x; sleep 30'")
    ps = ip.run_line_magic("container", "ps")
    assert isinstance(ps, pd.DataFrame) and list(ps["name"]) == ["m1"]
    top = ip.run_line_magic("container", "top m1")
    assert isinstance(top, pd.DataFrame) and top["PID"].dtype == "int64"
    view = ip.run_line_magic("container", "diff m1 --out d")
    assert type(view).__name__ == "DiffView"
    assert set(ip.user_ns["d"]["path"]) >= {"/tmp", "/tmp/x"}
    with pytest.raises(UsageError, match="container 'nope' not found"):
        ip.run_line_magic("container", "exec nope true")
    ip.run_line_magic("container", "rm -f m1")


def test_interrupting_the_cell_stops_its_container(ip, busybox_engine, capfd):
    import signal
    import threading
    import time

    timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    t0 = time.monotonic()
    ip.run_cell_magic("container", "run busybox", "echo started\nsleep 60\n")
    assert time.monotonic() - t0 < 15
    assert "started" in capfd.readouterr().out
    [row] = busybox_engine.ps(all=True)
    assert row.state == "exited"


def test_out_after_the_image_belongs_to_the_containers_command(ip):
    ip.user_ns.pop("nbc_kept", None)
    value = ip.run_line_magic("container", "run --rm busybox printf %s --out nbc_kept")
    assert value.lines == ["--outnbc_kept"]
    assert "nbc_kept" not in ip.user_ns
    kept = ip.run_line_magic("container", "images --out imgs")
    assert ip.user_ns["imgs"] is kept


def test_logs_follow_writes_text_to_a_kernel_stream_without_a_buffer(ip, busybox_engine, monkeypatch):
    import io

    busybox_engine.run("busybox", ["sh", "-c", "echo one; echo two >&2"], name="lf")
    out, err = io.StringIO(), io.StringIO()  # like ipykernel's OutStream: text only, no .buffer
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setattr("sys.stderr", err)
    assert ip.run_line_magic("container", "logs -f lf") is None
    monkeypatch.undo()
    assert out.getvalue() == "one\n" and err.getvalue() == "two\n"
    busybox_engine.rm("lf")
