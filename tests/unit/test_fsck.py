"""Snapshotter.fsck: leftovers of killed writers, orphan container layers, dangling links (no root)."""

import fcntl
import os
import time
from pathlib import Path

from nbcontainer.snapshot import Snapshotter
from nbcontainer.snapshot.overlay import ORPHAN_GRACE


def aged(path: Path) -> Path:
    past = time.time() - ORPHAN_GRACE - 60
    os.utime(path, (past, past))
    return path


def layer(snap: Snapshotter, name: str) -> str:
    diff_id = "sha256:" + name * 64

    def apply(d: Path) -> str:
        (d / "f").write_text(name)
        return diff_id

    snap.unpack(diff_id, "", diff_id, apply)
    return diff_id


def test_fsck_reports_and_repairs_each_kind_and_leaves_live_ones(tmp_path):
    snap = Snapshotter(tmp_path / "store")
    chain = layer(snap, "a")
    live = snap.prepare("live", chain)
    orphan = snap.prepare("gone", chain)
    aged(live.path)
    aged(orphan.path)
    tmp_overlay = aged_dir(snap.overlay_dir / ".tmp-killedload")
    tmp_layers = aged_dir(snap.layers_dir / (".tmp-" + "b" * 64))
    unrecorded = snap.overlay_dir / ("c" * 64)
    (unrecorded / "diff").mkdir(parents=True)
    aged(unrecorded)
    os.symlink("../nowhere/diff", snap.links_dir / "DANGLING")
    locked = aged_dir(snap.overlay_dir / ".tmp-stillwriting")
    young = snap.overlay_dir / ".tmp-justmade"
    young.mkdir()
    creating = snap.prepare("creating", chain)  # prepared, its container not yet recorded
    fd = os.open(locked, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        found = snap.fsck(live_keys={"live"})
        text = "\n".join(found)
        for what in (tmp_overlay, tmp_layers, unrecorded, orphan.path, snap.links_dir / "DANGLING"):
            assert str(what) in text, what
        assert str(live.path) not in text and str(locked) not in text and str(young) not in text
        assert str(creating.path) not in text
        assert all(p.exists() for p in (tmp_overlay, tmp_layers, unrecorded, orphan.path)), "report only"

        assert sorted(snap.fsck(repair=True, live_keys={"live"})) == sorted(found)
        for what in (tmp_overlay, tmp_layers, unrecorded, orphan.path):
            assert not what.exists(), what
        assert not os.path.lexists(snap.links_dir / "DANGLING")
        assert locked.exists() and young.exists() and live.upper.is_dir() and live.init is not None
        assert snap.fsck(live_keys={"live"}) == []
        snap.remove("creating")
        assert snap.layer(chain).path.is_dir(), "a recorded image layer is never an orphan"
        assert sorted(os.listdir(snap.links_dir)) == sorted(
            [snap.layer(chain).link, (live.path / "link").read_text(), live.lower[0].removeprefix("l/")])
    finally:
        os.close(fd)
    aged(young)
    assert sorted(snap.fsck(repair=True, live_keys={"live"})) == sorted(
        [f"leftover {locked}", f"leftover {young}"])
    assert not locked.exists() and not young.exists()


def test_a_layer_record_being_written_under_its_layer_lock_is_left(tmp_path):
    snap = Snapshotter(tmp_path / "store")
    chain = "e" * 64
    meta = aged_dir(snap.layers_dir / f".tmp-{chain}")
    with snap._lock("layer-" + chain[:16]):
        assert snap.fsck(repair=True) == []
    assert meta.exists()
    assert snap.fsck(repair=True) == [f"leftover {meta}"]
    assert not meta.exists()


def test_without_live_keys_container_layers_are_left_alone(tmp_path):
    snap = Snapshotter(tmp_path / "store")
    chain = layer(snap, "a")
    c = snap.prepare("somebody", chain)
    aged(c.path)
    assert snap.fsck(repair=True) == []
    assert c.path.is_dir()


def test_remove_takes_the_init_dir_and_both_links(tmp_path):
    snap = Snapshotter(tmp_path / "store")
    chain = layer(snap, "a")
    c = snap.prepare("ctr", chain)
    assert c.init == c.path / "init" and c.lower_dirs[0] == c.init
    assert c.image_dirs == (snap.layer(chain).path,)
    assert sorted(os.listdir(c.init)) == ["dev", "etc", "proc", "sys"]
    assert sorted(os.listdir(c.init / "etc")) == ["hostname", "hosts", "resolv.conf"]
    snap.remove("ctr")
    assert not c.path.exists()
    assert os.listdir(snap.links_dir) == [snap.layer(chain).link]


def test_the_init_dir_holds_only_what_the_image_lacks(tmp_path):
    snap = Snapshotter(tmp_path / "store")
    diff_id = "sha256:" + "d" * 64

    def apply(d: Path) -> str:
        (d / "etc").mkdir(mode=0o700)
        (d / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
        (d / "proc").mkdir()
        os.symlink("/nowhere", d / "sys")
        return diff_id

    snap.unpack(diff_id, "", diff_id, apply)
    c = snap.prepare("ctr", diff_id)
    assert c.init is not None
    assert sorted(os.listdir(c.init)) == ["dev", "etc"]
    assert sorted(os.listdir(c.init / "etc")) == ["hostname", "resolv.conf"]
    assert (os.stat(c.init / "etc").st_mode & 0o777) == 0o700, "a parent keeps the image's mode"


def aged_dir(path: Path) -> Path:
    path.mkdir()
    (path / "payload").write_text("x")
    return aged(path)


def test_opening_a_store_sweeps_the_leftovers_of_killed_unpacks_only(tmp_path):
    snap = Snapshotter(tmp_path / "store")
    killed = aged_dir(snap.overlay_dir / ".tmp-killed")
    writing = aged_dir(snap.overlay_dir / ".tmp-writing")
    fd = os.open(writing, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        Snapshotter(tmp_path / "store")
        assert not killed.exists() and writing.exists()
    finally:
        os.close(fd)
