"""The init layer (Docker's ``<id>-init``): the runtime's stubs stay out of diff and commit (root only)."""

import os
import shutil
import stat
import tarfile
from pathlib import Path

import pytest

from tests.privileged.conftest import build_busybox_rootfs

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and overlay mounts"),
    pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="busybox-static is not installed"),
]


def layer_names(engine, img) -> list[str]:
    with tarfile.open(engine.store.content.path(img.manifest.layers[-1].digest)) as tar:
        return tar.getnames()


@pytest.fixture
def bare_image(engine, tmp_path):
    """An image of bin/busybox and its applet links only: no /etc, /dev, /proc, /sys."""
    rootfs = tmp_path / "bare"
    rootfs.mkdir()
    build_busybox_rootfs(rootfs)
    for d in ("etc", "proc", "sys", "dev", "root", "home", "tmp"):
        shutil.rmtree(rootfs / d)
    out = tmp_path / "bare.tar"
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for p in sorted(rootfs.rglob("*")):
            tar.add(p, arcname=str(p.relative_to(rootfs)), recursive=False)
    engine.import_(out, "bare", changes=["ENV PATH=/bin:/sbin:/usr/bin:/usr/sbin"])
    return "bare"


def test_an_image_without_etc_commits_an_empty_layer(engine, bare_image):
    r = engine.run(bare_image, ["true"], name="t1", network="none")
    assert r.exit_code == 0, r.stderr
    layer = engine.container_layer("t1")
    init = layer.init
    assert init is not None and layer.lower_dirs[0] == init and init not in layer.image_dirs
    for d in ("dev", "proc", "sys", "etc"):
        st = os.lstat(init / d)
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755 and st.st_uid == 0
    for f in ("hosts", "hostname", "resolv.conf"):
        st = os.lstat(init / "etc" / f)
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o644 and st.st_size == 0
    assert engine.diff("t1") == []
    assert os.listdir(layer.upper) == []
    img = engine.commit("t1", "bare:after")
    assert layer_names(engine, img) == []
    engine.rm("t1")
    assert not init.exists()
    assert engine.fsck() == []


def test_busybox_commit_holds_only_what_the_container_wrote(busybox_engine):
    e = busybox_engine
    r = e.run("busybox", ["sh", "-c", "echo x > /tmp/f"], name="w1", network="none")
    assert r.exit_code == 0, r.stderr
    assert [(d.kind, d.path) for d in e.diff("w1")] == [("C", "/tmp"), ("A", "/tmp/f")]
    img = e.commit("w1", "w:1")
    assert layer_names(e, img) == ["tmp", "tmp/f"]
    e.rm("w1")


def test_the_container_still_sees_its_etc_files_bind_mounted(engine, bare_image):
    c = engine.run(bare_image, ["sleep", "60"], detach=True, name="s1", hostname="inithost", network="none")
    try:
        r = engine.exec("s1", ["cat", "/etc/hostname", "/etc/hosts"])
        assert r.exit_code == 0, r.stderr
        assert r.stdout.startswith(b"inithost\n") and b"localhost" in r.stdout
        mounts = engine.exec("s1", ["cat", "/proc/self/mounts"]).stdout.decode()
        for target in ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/proc", "/dev", "/sys"):
            assert f" {target} " in mounts, target
        assert Path(engine.inspect("s1")["GraphDriver"]["Data"]["LowerDir"].split(":")[0]).name == "init"
    finally:
        engine.stop("s1", timeout=1)
    assert engine.diff("s1") == []
    engine.rm(c.id)
