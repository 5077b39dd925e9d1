import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from nbcontainer import Engine
from nbcontainer.cli import main as cli
from nbcontainer.errors import InvalidArgumentError, NotFoundError, StateTransitionError, UnsafeArchiveError
from nbcontainer.oci import History, ImageConfig

needs_busybox = pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="busybox-static not installed")


def rootfs_tar(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in entries:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def engine(tmp_path):
    return Engine(tmp_path / "store")


@needs_busybox
def test_bootstrap_busybox_gives_an_honest_two_row_history(engine):
    img = engine.bootstrap("busybox")
    assert img.familiar_names == ("busybox:latest",)
    rows = engine.history("busybox")
    assert [r.empty_layer for r in rows] == [True, False]
    assert rows[0].id == img.id and rows[1].id == "<missing>"
    assert rows[0].created_by.endswith('CMD ["sh"]')
    assert "busybox-static" in rows[1].created_by and rows[1].size > 500_000
    [layer] = engine.layers("busybox")
    assert layer.diff_id == img.config.diff_ids[0] and layer.chain_id == layer.diff_id
    assert os.path.isfile(os.path.join(layer.path, "bin/busybox"))
    assert os.readlink(os.path.join(layer.path, "bin/sh")) == "/bin/busybox"
    assert layer.files > 100


@needs_busybox
def test_bootstrap_is_reproducible(tmp_path):
    a = Engine(tmp_path / "a").bootstrap("busybox")
    b = Engine(tmp_path / "b").bootstrap("busybox")
    assert a.id == b.id


def test_history_shows_a_local_parent_image_id_instead_of_missing(engine, tmp_path):
    base = tmp_path / "base.tar"
    base.write_bytes(rootfs_tar([("etc/a", b"a")]))
    parent = engine.import_(base, "parent:1")
    top_layer = engine.store.content.put(rootfs_tar([("etc/b", b"b")]))
    from nbcontainer.oci import MT_OCI_LAYER, Descriptor

    cfg = ImageConfig(
        "amd64", created="2025-01-01T00:00:00Z",
        diff_ids=(*parent.config.diff_ids, top_layer),
        history=(*parent.config.history,
                 History(created="2025-01-01T00:00:00Z", created_by="echo b", comment="c")),
    )
    top = Descriptor(MT_OCI_LAYER, top_layer, engine.store.content.size(top_layer))
    child = engine.core.add_and_unpack(cfg, [*parent.manifest.layers, top], "child:1", None)
    rows = engine.history("child:1")
    assert [r.id for r in rows] == [child.id, parent.id]
    engine.rmi("parent:1")
    assert [r.id for r in engine.history("child:1")] == [child.id, "<missing>"]
    assert engine.history("child:1")[0].comment == "c"


def test_import_of_hostile_tarball_writes_nothing_outside_and_lists_nothing(engine, tmp_path):
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as tf:
        ti = tarfile.TarInfo("ok")
        tf.addfile(ti, io.BytesIO(b""))
        ti = tarfile.TarInfo("../../escaped")
        ti.size = 1
        tf.addfile(ti, io.BytesIO(b"x"))
    path = tmp_path / "evil.tar"
    path.write_bytes(evil.getvalue())
    with pytest.raises(UnsafeArchiveError):
        engine.import_(path, "evil")
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "store" / "escaped").exists()
    assert engine.images() == []
    assert list(engine.store.content.walk()) == []
    assert engine.snapshots.layers() == []


def test_import_of_gzip_tarball_records_comment_and_changes(engine, tmp_path):
    path = tmp_path / "rootfs.tar.gz"
    path.write_bytes(gzip.compress(rootfs_tar([("hello.txt", b"hi\n")])))
    img = engine.import_(path, "hello:1", changes=["CMD [\"cat\", \"/hello.txt\"]", "ENV A=1"])
    assert img.config.config["Cmd"] == ["cat", "/hello.txt"] and img.config.config["Env"] == ["A=1"]
    [row] = engine.history("hello:1")
    assert row.comment == f"Imported from {path}"
    [layer] = engine.layers("hello:1")
    assert Path(layer.path, "hello.txt").read_text() == "hi\n"


def test_rmi_untags_then_deletes_and_frees_layers(engine, tmp_path):
    path = tmp_path / "r.tar"
    path.write_bytes(rootfs_tar([("f", b"1")]))
    img = engine.import_(path, "one")
    engine.tag("one", "two")
    r = engine.rmi("one")
    assert r.untagged == ["one:latest"] and r.deleted == []
    with pytest.raises(NotFoundError):
        engine.image("one")
    r = engine.rmi("two")
    assert r.deleted == [str(img.id)]
    assert engine.snapshots.layers() == [] and list(engine.store.content.walk()) == []


def test_rmi_refuses_an_image_a_container_uses_unless_forced(engine, tmp_path):
    path = tmp_path / "r.tar"
    path.write_bytes(rootfs_tar([("f", b"1")]))
    img = engine.import_(path, "used")
    cdir = engine.root / "containers" / ("c" * 64)
    cdir.mkdir(parents=True)
    (cdir / "config.json").write_text(json.dumps({"id": "c" * 64, "annotations": {"image_id": img.id}}))
    with pytest.raises(StateTransitionError, match="in use by container cccccccccccc"):
        engine.rmi("used")
    assert engine.image("used").id == img.id
    engine.rmi("used", force=True)


def test_inspect_image_is_docker_shaped(engine, tmp_path):
    path = tmp_path / "r.tar"
    path.write_bytes(rootfs_tar([("f", b"1")]))
    img = engine.import_(path, "x:1")
    [obj] = json.loads(json.dumps([engine.inspect("x:1")]))
    assert obj["Id"] == img.id and obj["RepoTags"] == ["x:1"]
    assert obj["RootFS"] == {"Type": "layers", "Layers": [img.config.diff_ids[0]]}
    assert obj["GraphDriver"]["Name"] == "overlay2"
    assert os.path.isdir(obj["GraphDriver"]["Data"]["UpperDir"])


def test_cli_prints_one_line_error_and_nonzero_exit_for_unknown_image(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nbcontainer", "--root", str(tmp_path), "history", "nope"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "Error: image 'nope' not found"
    assert "Traceback" not in proc.stderr


def test_cli_quiet_and_json_formats(tmp_path, capsys):
    path = tmp_path / "r.tar"
    path.write_bytes(rootfs_tar([("f", b"1")]))
    root = str(tmp_path / "s")
    assert cli(["--root", root, "import", str(path), "q:1"]) == 0
    capsys.readouterr()
    assert cli(["--root", root, "images", "-q"]) == 0
    ids = capsys.readouterr().out.split()
    assert len(ids) == 1 and len(ids[0]) == 12
    assert cli(["--root", root, "--format", "json", "images"]) == 0
    obj = json.loads(capsys.readouterr().out.strip())
    assert obj["repository"] == "q" and obj["tag"] == "1" and obj["size"] == 1


def test_env_var_sets_the_root(tmp_path, monkeypatch):
    monkeypatch.setenv("NBCONTAINER_ROOT", str(tmp_path / "envroot"))
    assert Engine().root == tmp_path / "envroot"


def test_kill_9_during_import_leaves_a_store_that_lists_and_repairs(tmp_path):
    import signal
    import time

    root = tmp_path / "store"
    first = tmp_path / "small.tar"
    first.write_bytes(rootfs_tar([("keep", b"k")]))
    Engine(root).import_(first, "keep:1")
    big = tmp_path / "big.tar"
    with tarfile.open(big, "w") as tf:
        chunk = bytes(512 * 1024)
        for i in range(600):
            ti = tarfile.TarInfo(f"d/f{i:04d}")
            ti.size = len(chunk)
            tf.addfile(ti, io.BytesIO(chunk))
    proc = subprocess.Popen([sys.executable, "-m", "nbcontainer", "--root", str(root),
                             "import", str(big), "big:1"])
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the import finished before it could be killed"
    engine = Engine(root)  # sweeps ingest/ on start
    names = [(r.repository, r.tag) for r in engine.images()]
    assert ("keep", "1") in names and ("big", "1") not in names
    engine.fsck(repair=True)
    assert engine.snapshots.fsck() == []
    assert engine.layers("keep:1")[0].files == 1
    # and the interrupted import can simply be run again
    engine.import_(big, "big:1")
    assert engine.layers("big:1")[0].files == 600


def test_images_lists_an_invalid_stored_image_with_a_mark_and_rmi_removes_it(engine, tmp_path):
    path = tmp_path / "r.tar"
    path.write_bytes(rootfs_tar([("a", b"a")]))
    good = engine.import_(path, "good:1")
    path.write_bytes(rootfs_tar([("b", b"b")]))
    bad = engine.import_(path, "bad:1")
    cfg = bad.config.to_json()
    cfg["created"] = 1e20  # what an older version let through; parsing it broke `images` for everyone
    cfg["config"] = {"Env": "A=1"}
    blob = engine.store.content.path(bad.id)
    os.chmod(blob, 0o644)
    blob.write_bytes(json.dumps(cfg).encode())
    rows = {r.repository: r for r in engine.images()}
    assert set(rows) == {"good", "bad"}
    assert rows["good"].created is not None and rows["good"].image.problem == ""
    assert rows["bad"].created is None and rows["bad"].id == bad.id
    assert rows["bad"].image.problem.startswith("image config: 'created'")
    assert rows["bad"].size == bad.size
    with pytest.raises(InvalidArgumentError, match="unusable"):
        engine.history("bad:1")
    engine.rmi("bad:1")
    assert [r.repository for r in engine.images()] == ["good"]
    assert engine.history("good:1")[0].id == good.id


def _old_history_ids(images, img):
    """The quadratic algorithm ``history`` used before, kept here as the reference for its results."""
    cfg = img.config
    hist = list(cfg.history) or [History(created=cfg.created) for _ in cfg.diff_ids]
    out, layer_i = [], 0
    for k, h in enumerate(hist):
        if not h.empty_layer and layer_i < len(cfg.diff_ids):
            layer_i += 1
        if k == len(hist) - 1:
            out.append(str(img.id))
            continue
        hit = ""
        for other in images:
            if (list(other.config.history) == hist[: k + 1]
                    and tuple(other.config.diff_ids) == cfg.diff_ids[:layer_i]):
                hit = str(other.id)
                break
        out.append(hit or "<missing>")
    out.reverse()
    return out


def test_history_prefix_ids_equal_the_old_quadratic_algorithm(engine):
    from nbcontainer.oci import MT_OCI_LAYER, Descriptor

    blobs = [engine.store.content.put(rootfs_tar([(f"f{i}", bytes([i]))])) for i in range(4)]
    descs = [Descriptor(MT_OCI_LAYER, b, engine.store.content.size(b)) for b in blobs]

    def row(i, empty=False):
        return History(created=f"2025-01-0{1 + i % 9}T00:00:00Z", created_by=f"step {i}", empty_layer=empty)

    # rows: L0, meta, L1, meta, L2, L3 -- images at several prefixes, one twin that differs in a field
    # history does not compare (author), one with the same history but other layers, one with none
    plan = [(0, True), (1, False), (2, True), (3, False), (4, True), (5, True)]
    rows = [row(i, empty=not has) for i, has in plan]
    n_layers = [sum(1 for _, has in plan[: k + 1] if has) for k in range(len(plan))]

    def add(k, name, *, author="", swap=False):
        layers = descs[: n_layers[k]]
        if swap and len(layers) > 1:
            layers = [layers[1], layers[0], *layers[2:]]
        cfg = ImageConfig("amd64", created="2025-02-01T00:00:00Z", author=author,
                          diff_ids=tuple(d.digest for d in layers), history=tuple(rows[: k + 1]))
        return engine.core.add_and_unpack(cfg, layers, name, None)

    add(0, "p0:1")
    add(1, "p1:1")
    add(1, "p1twin:1", author="someone")
    add(3, "p3swap:1", swap=True)
    add(4, "p4:1")
    top = add(5, "top:1")
    no_hist = engine.core.add_and_unpack(
        ImageConfig("amd64", created="2025-03-01T00:00:00Z", diff_ids=tuple(d.digest for d in descs[:2])),
        descs[:2], "nohist:1", None)
    images = engine.store.images()
    for img in (top, no_hist, *images):
        expected = _old_history_ids(images, img)
        assert [r.id for r in engine.history(str(img.id))] == expected
    got = [r.id for r in engine.history("top:1")]
    assert got.count("<missing>") == 2 and len(set(got) - {"<missing>"}) == 4
