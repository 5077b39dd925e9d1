import io
import os
import tarfile

import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell


def rootfs_tar(path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("etc/hello")
        ti.size = 3
        tf.addfile(ti, io.BytesIO(b"hi\n"))
    path.write_bytes(buf.getvalue())
    return path


@pytest.fixture(scope="module")
def shell(tmp_path_factory):
    os.environ["IPYTHONDIR"] = str(tmp_path_factory.mktemp("ipython"))
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "nbcontainer")
    return sh


@pytest.fixture
def ip(shell, tmp_path, monkeypatch):
    monkeypatch.setenv("NBCONTAINER_ROOT", str(tmp_path / "store"))
    from nbcontainer.notebook.magics import ContainerMagics

    # a fresh engine for this test's store root (the extension keeps one per shell)
    m = ContainerMagics(shell)
    m._ipython_history = shell.magics_manager.registry["HistoryMagics"].history
    shell.register_magics(m)
    return shell


def test_container_images_returns_a_typed_dataframe(ip, tmp_path):
    ip.run_line_magic("container", f"import {rootfs_tar(tmp_path / 'r.tar')} demo:1")
    df = ip.run_line_magic("container", "images")
    assert isinstance(df, pd.DataFrame)
    assert list(df["repository"]) == ["demo"] and df["size"].dtype == "int64"
    assert str(df["created"].dt.tz) == "UTC"


def test_history_magic_takes_an_image_and_out_keeps_the_frame(ip, tmp_path):
    ip.run_line_magic("container", f"import {rootfs_tar(tmp_path / 'r.tar')} demo:1 -m first")
    df = ip.run_line_magic("history", "demo:1 --out h")
    assert list(df["comment"]) == ["first"]
    assert ip.user_ns["h"] is df


def test_unknown_image_raises_exactly_usage_error(ip):
    with pytest.raises(UsageError) as info:
        ip.run_line_magic("container", "history nope")
    assert type(info.value) is UsageError
    assert str(info.value) == "image 'nope' not found"


def test_bad_flag_is_a_usage_error(ip):
    with pytest.raises(UsageError, match="unrecognized arguments"):
        ip.run_line_magic("container", "images --bogus")


def test_ipython_history_still_works(ip, capsys):
    ip.run_cell("x = 41 + 1", store_history=True)
    ip.run_line_magic("history", "-n")
    assert "x = 41 + 1" in capsys.readouterr().out
    # ranges and flags go to IPython, never to our parser
    ip.run_line_magic("history", "-n 1-4")
    assert "x = 41 + 1" in capsys.readouterr().out
