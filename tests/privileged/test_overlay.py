"""Real overlay mounts over layers unpacked by apply_layer (root only)."""

import io
import os
import stat
import subprocess
import tarfile

import pytest

from nbcontainer.layers import apply_layer, write_layer
from nbcontainer.oci import chain_ids
from nbcontainer.snapshot import Snapshotter

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root for overlay mounts and whiteout devices")


def layer_tar(entries):
    """entries: list of (name, kind, data) with kind file|dir|whiteout|opaque."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, data in entries:
            ti = tarfile.TarInfo(name)
            if kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(ti)
            else:
                if kind == "whiteout":
                    parent, base = os.path.split(name)
                    ti.name = os.path.join(parent, ".wh." + base)
                    data = b""
                elif kind == "opaque":
                    ti.name = os.path.join(name, ".wh..wh..opq")
                    data = b""
                ti.size, ti.mode = len(data), 0o644
                tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


class Mounts:
    def __init__(self):
        self.targets = []

    def mount(self, m, target):
        os.makedirs(target, exist_ok=True)
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", ",".join(m.options), str(target)],
                       cwd=m.cwd, check=True, capture_output=True)
        self.targets.append(str(target))

    def cleanup(self):
        for t in reversed(self.targets):
            subprocess.run(["umount", "-l", t], capture_output=True, check=False)


@pytest.fixture
def mounts(tmp_path):
    m = Mounts()
    yield m
    m.cleanup()
    with open("/proc/self/mountinfo") as f:
        assert str(tmp_path) not in f.read(), "a test left a mount behind"


@pytest.fixture
def stack(tmp_path):
    """Two committed layers: base has etc/a, etc/b, data/{x,y}; top whites out etc/b, makes data opaque."""
    snap = Snapshotter(tmp_path / "store")
    base = layer_tar([("etc", "dir", None), ("etc/a", "file", b"A"), ("etc/b", "file", b"B"),
                      ("data", "dir", None), ("data/x", "file", b"X"), ("data/y", "file", b"Y")])
    top = layer_tar([("etc", "dir", None), ("etc/b", "whiteout", None), ("data", "dir", None),
                     ("data", "opaque", None), ("data/z", "file", b"Z")])
    diffs = []
    for i, data in enumerate([base, top]):
        p = tmp_path / f"l{i}.tar"
        p.write_bytes(data)
        diffs.append(None)
        diffs[i] = apply_layer(str(p), str(tmp_path / f"probe{i}")).diff_id
    chains = chain_ids(diffs)
    parent = ""
    for i, (d, c) in enumerate(zip(diffs, chains, strict=True)):
        p = str(tmp_path / f"l{i}.tar")
        snap.unpack(c, parent, d, lambda dest, p=p: apply_layer(p, str(dest)))
        parent = c
    return snap, chains


def test_lower_file_is_visible_and_whiteout_hides_and_opaque_dir_hides_children(stack, mounts, tmp_path):
    snap, chains = stack
    m = snap.view(chains[-1])
    assert m.readonly and any(o.startswith("lowerdir=") for o in m.options)
    mounts.mount(m, tmp_path / "view")
    v = tmp_path / "view"
    assert (v / "etc/a").read_bytes() == b"A"
    assert not (v / "etc/b").exists()
    assert sorted(os.listdir(v / "data")) == ["z"]


def test_write_lands_in_upper_and_write_layer_round_trips(stack, mounts, tmp_path):
    snap, chains = stack
    c = snap.prepare("ctr1", chains[-1])
    mounts.mount(snap.mount("ctr1"), c.merged)
    (c.merged / "etc/new").write_text("new\n")
    os.unlink(c.merged / "etc/a")
    os.makedirs(c.merged / "data")  if not (c.merged / "data").exists() else None
    assert (c.upper / "etc/new").read_text() == "new\n"
    st = os.lstat(c.upper / "etc/a")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0, "deleting a lower file leaves a 0/0 whiteout"

    buf = io.BytesIO()
    stats = write_layer(str(c.upper), buf)
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tar:
        names = tar.getnames()
    assert "etc/.wh.a" in names and "etc/new" in names
    again = tmp_path / "again"
    (tmp_path / "l.tar").write_bytes(buf.getvalue())
    assert apply_layer(str(tmp_path / "l.tar"), str(again)).diff_id == stats.diff_id
    st2 = os.lstat(again / "etc/a")
    assert stat.S_ISCHR(st2.st_mode) and st2.st_rdev == 0
    assert (again / "etc/new").read_text() == "new\n"


def test_mount_option_uses_short_links_and_reports_budget(stack):
    snap, chains = stack
    snap.prepare("ctr2", chains[-1])
    m = snap.mount("ctr2")
    lower = next(o for o in m.options if o.startswith("lowerdir="))
    parts = lower.removeprefix("lowerdir=").split(":")
    assert len(parts) == 3 and all("/l/" in p for p in parts), "the init dir, then the two image layers"
    assert snap.lower_budget(2) > 100
    snap.remove("ctr2")
    assert not (snap.overlay_dir / "ctr2").exists()


@pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="busybox-static not installed")
def test_engine_mount_shows_an_overlay_with_lowerdir_like_the_docker_tutorial(tmp_path):
    from nbcontainer import Engine

    engine = Engine(tmp_path / "store")
    engine.bootstrap("busybox")
    target = tmp_path / "mnt"
    target.mkdir()
    engine.mount("busybox", target)
    try:
        with open("/proc/mounts") as mounts:
            line = next(x for x in mounts if f" {target} " in x)
        assert line.startswith("overlay ") and "lowerdir=" in line and " ro," in line
        assert (target / "bin/busybox").is_file()
        with pytest.raises(OSError):
            (target / "new").write_text("x")
    finally:
        engine.umount(target)
    with open("/proc/mounts") as mounts:
        assert f" {target} " not in mounts.read()
