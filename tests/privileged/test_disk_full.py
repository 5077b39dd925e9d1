"""A full disk: the container's exit code is still recorded, commit says so in one line, and the
store stays as it was. The store root is a small tmpfs of its own."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a tmpfs and run containers"),
    pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="busybox-static is not installed"),
]


@pytest.fixture
def small_root(tmp_path):
    root = tmp_path / "small"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs", str(root)], check=True)
    yield root
    subprocess.run(["umount", "-l", str(root)], check=False)


def test_a_container_that_fills_the_disk_keeps_its_exit_code_and_commit_fails_in_one_line(small_root):
    from nbc_testing import cleanup_engine

    from nbcontainer import Engine

    engine = Engine(small_root / "store")
    try:
        engine.bootstrap("busybox")
        fill = "dd if=/dev/zero of=/fill bs=1M count=100; echo done; exit 3"
        res = engine.run("busybox", ["sh", "-c", fill], name="filler", network="none")
        assert res.exit_code == 3
        assert engine.container("filler").exit_code == 3
        before = [(r.repository, r.tag, r.id) for r in engine.images()]
        cli = subprocess.run([sys.executable, "-m", "nbcontainer", "--root", str(engine.root),
                              "commit", "filler", "full:1"], capture_output=True, text=True, check=False)
        assert cli.returncode == 1, cli.stderr
        assert cli.stderr.count("\n") == 1 and "no space left on device" in cli.stderr, cli.stderr
        assert "Traceback" not in cli.stderr
        assert [(r.repository, r.tag, r.id) for r in engine.images()] == before
        assert list((engine.root / "ingest").iterdir()) == []
        engine.rm("filler")
        engine.run("busybox", ["true"], remove=True, network="none")  # room again: it works
    finally:
        cleanup_engine(engine, small_root / "store")  # the tmpfs itself is the fixture's


def test_loading_an_archive_larger_than_the_disk_fails_in_one_line_and_leaves_the_store_as_it_was(
        small_root, tmp_path):
    import io
    import tarfile

    from nbcontainer import Engine

    big = tmp_path / "big-rootfs.tar"
    with tarfile.open(big, "w") as tar:
        data = os.urandom(32 << 20)  # more than the 24 MB disk, incompressible
        info = tarfile.TarInfo("blob.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    roomy = Engine(tmp_path / "roomy")
    roomy.import_(big, "big:1")
    archive = tmp_path / "big.tar"
    roomy.save("big:1", archive)
    small = Engine(small_root / "store")
    small.bootstrap("busybox")
    before = [(r.repository, r.id) for r in small.images()]
    cli = subprocess.run([sys.executable, "-m", "nbcontainer", "--root", str(small.root), "load", "-q", "-i",
                          str(archive)], capture_output=True, text=True, check=False)
    assert cli.returncode == 1 and "Traceback" not in cli.stderr, cli.stderr
    assert cli.stderr.count("\n") == 1 and "no space left on device" in cli.stderr, cli.stderr
    assert [(r.repository, r.id) for r in small.images()] == before
    assert list((small.root / "ingest").iterdir()) == []
