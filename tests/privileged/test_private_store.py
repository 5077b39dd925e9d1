"""The store is private: nobody else reads layers, configs (with their -e values), state or logs; the
files bind-mounted into a container stay readable inside it for any user."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run containers and to act as nobody"),
    pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="busybox-static is not installed"),
    pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is not installed"),
]


@pytest.fixture
def open_parent():
    """A parent dir anyone may traverse (pytest's tmp dirs are 0700 and would hide everything)."""
    parent = Path(tempfile.mkdtemp(prefix="nbc-private-"))
    os.chmod(parent, 0o755)
    yield parent
    shutil.rmtree(parent, ignore_errors=True)


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv],
                          capture_output=True, text=True, check=False)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_nobody_reads_no_layer_config_state_or_log_and_the_container_still_reads_its_etc(open_parent):
    from nbc_testing import cleanup_engine

    from nbcontainer import Engine

    engine = Engine(open_parent / "store")
    try:
        engine.bootstrap("busybox")
        st = engine.run("busybox", ["sh", "-c", "echo hello; sleep 30"], detach=True, name="secret",
                        env=["TOKEN=s3cr3t"], network="none")
        bundle = Path(st.bundle)
        layer = Path(engine.layer_dirs("busybox")[0])
        targets = [engine.root, bundle / "config.json", bundle / "state.json", bundle / "log.jsonl",
                   layer / "etc" / "passwd"]
        for t in targets:
            assert t.exists(), t
            res = as_nobody("cat" if t.is_file() else "ls", str(t))
            assert res.returncode != 0 and "Permission denied" in res.stderr, (t, res.stdout, res.stderr)
        assert mode(engine.root) == 0o700
        assert mode(bundle) == 0o710
        for name in ("config.json", "state.json", "log.jsonl"):
            assert mode(bundle / name) == 0o600, name
        assert mode(engine.root / "run" / "runner.sock") == 0o600
        for name in ("hosts", "hostname", "resolv.conf"):
            assert mode(bundle / name) == 0o644, name
        etc = ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"]
        inside = engine.exec("secret", ["cat", *etc], user="65534")
        assert inside.exit_code == 0, inside.stderr
    finally:
        cleanup_engine(engine, open_parent)


def test_an_older_open_store_root_is_tightened_when_opened(open_parent):
    from nbcontainer import Engine

    root = open_parent / "old"
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)
    Engine(root)
    assert mode(root) == 0o700


def test_rmi_of_one_tag_of_several_untags_while_a_container_uses_the_image(busybox_engine):
    e = busybox_engine
    e.tag("busybox", "other:1")
    e.create("busybox", ["true"], name="user1", network="none")
    try:
        res = e.rmi("other:1")
        assert res.untagged == ["other:1"] and res.deleted == []
        assert [r.repository for r in e.images()] == ["busybox"]
        with pytest.raises(Exception, match="in use by container"):
            e.rmi("busybox")
    finally:
        e.rm("user1", force=True)
