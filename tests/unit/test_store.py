import json
import os
import subprocess
import sys

import pytest

from nbcontainer.errors import DigestMismatchError, InvalidArgumentError, NotFoundError
from nbcontainer.oci import MT_OCI_LAYER, Descriptor, Digest, History, ImageConfig
from nbcontainer.store import ImageStore


def make_image(store, name, payload=b"layer-bytes", history=None):
    d = store.content.put(payload)
    cfg = ImageConfig("amd64", created="2024-01-01T00:00:00Z", diff_ids=(d,),
                      history=history or (History(created_by="ADD file", comment=name),))
    return store.add_image(cfg, [Descriptor(MT_OCI_LAYER, d, len(payload))], name)


def test_store_root_is_a_valid_oci_layout(tmp_path):
    store = ImageStore(tmp_path)
    make_image(store, "busybox")
    assert json.loads((tmp_path / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["schemaVersion"] == 2
    [entry] = index["manifests"]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "docker.io/library/busybox:latest"
    blob = tmp_path / "blobs" / "sha256" / entry["digest"][7:]
    assert Digest.of(blob.read_bytes()) == entry["digest"]


def test_put_refuses_wrong_digest_and_leaves_nothing(tmp_path):
    store = ImageStore(tmp_path)
    with pytest.raises(DigestMismatchError):
        store.content.put_stream(__import__("io").BytesIO(b"abc"), expected=Digest.of(b"xyz"))
    assert list(store.content.walk()) == []
    assert os.listdir(store.content.ingest_dir) == []


def test_put_refuses_wrong_size(tmp_path):
    store = ImageStore(tmp_path)
    with pytest.raises(DigestMismatchError, match="size"):
        store.content.put_stream(__import__("io").BytesIO(b"abc"), size=4)


def test_resolve_by_name_id_prefix_and_suggests_close_names(tmp_path):
    store = ImageStore(tmp_path)
    img = make_image(store, "busybox:latest")
    assert store.resolve("busybox").id == img.id
    assert store.resolve(img.id.hex[:8]).id == img.id
    assert store.resolve(str(img.id)).id == img.id
    with pytest.raises(NotFoundError,
                       match=r"image 'busybox:lates' not found \(did you mean 'busybox:latest'\?\)"):
        store.resolve("busybox:lates")


def test_retagging_leaves_the_old_image_unnamed(tmp_path):
    store = ImageStore(tmp_path)
    a = make_image(store, "app", b"one")
    b = make_image(store, "app", b"two")
    images = {i.id: i for i in store.images()}
    assert images[b.id].names == ("docker.io/library/app:latest",)
    assert images[a.id].names == ()


def test_tag_and_untag(tmp_path):
    store = ImageStore(tmp_path)
    img = make_image(store, "app")
    store.tag(img, "localhost:5000/app:v1")
    assert set(store.resolve("app").names) == {"docker.io/library/app:latest", "localhost:5000/app:v1"}
    store.untag("app")
    assert store.resolve("localhost:5000/app:v1").names == ("localhost:5000/app:v1",)
    with pytest.raises(InvalidArgumentError):
        store.tag(img, "app@sha256:" + "0" * 64)


def test_gc_keeps_referenced_blobs_only(tmp_path):
    store = ImageStore(tmp_path)
    img = make_image(store, "app")
    stray = store.content.put(b"stray")
    assert store.gc() == [stray]
    store.remove(img)
    assert set(store.gc()) >= {img.id, img.manifest_digest}
    assert list(store.content.walk()) == []


def test_sweep_removes_dead_ingests_but_not_live_ones(tmp_path):
    store = ImageStore(tmp_path)
    (store.content.ingest_dir / "ingest-dead").write_bytes(b"partial")
    live = store.content.writer()
    live.write(b"in progress")
    assert store.content.sweep() == 1
    assert os.path.exists(live.path)
    live.commit()


def test_killed_writer_leaves_a_store_that_still_lists(tmp_path):
    store = ImageStore(tmp_path)
    img = make_image(store, "keep")
    code = (
        "import os, sys; from nbcontainer.store import ImageStore; s = ImageStore(sys.argv[1]); "
        "w = s.content.writer(); w.write(b'x' * 100000); os.kill(os.getpid(), 9)"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=False)
    assert os.listdir(store.content.ingest_dir)  # the killed writer's leftover
    fresh = ImageStore(tmp_path)
    assert fresh.content.sweep() == 1
    assert [i.id for i in fresh.images()] == [img.id]


def test_new_store_gets_a_store_version_file(tmp_path):
    from nbcontainer.store import STORE_VERSION

    ImageStore(tmp_path / "s")
    assert (tmp_path / "s" / "store-version").read_text().strip() == str(STORE_VERSION)


def test_store_without_a_version_file_is_migrated_when_opened(tmp_path):
    from nbcontainer.store import STORE_VERSION

    store = ImageStore(tmp_path)
    img = make_image(store, "busybox")
    (tmp_path / "store-version").unlink()  # as today's main left it
    reopened = ImageStore(tmp_path)
    assert (tmp_path / "store-version").read_text().strip() == str(STORE_VERSION)
    assert [i.id for i in reopened.images()] == [img.id]


def test_store_of_a_newer_format_is_refused_with_one_line(tmp_path):
    from nbcontainer.store import STORE_VERSION

    ImageStore(tmp_path)
    (tmp_path / "store-version").write_text(f"{STORE_VERSION + 1}\n")
    with pytest.raises(InvalidArgumentError) as err:
        ImageStore(tmp_path)
    assert str(err.value) == (f"store format {STORE_VERSION + 1} is newer than this nbcontainer understands "
                              f"({STORE_VERSION})")
    assert (tmp_path / "store-version").read_text() == f"{STORE_VERSION + 1}\n"  # left as it was


def _overwrite_config(store, img, obj):
    """Replace an image's config blob with ``obj`` in place, as an older version might have written it."""
    path = store.content.path(img.id)
    os.chmod(path, 0o644)
    path.write_bytes(json.dumps(obj).encode())


def test_invalid_stored_config_is_listed_with_a_problem_and_refused_for_use(tmp_path):
    store = ImageStore(tmp_path)
    good = make_image(store, "good")
    bad = make_image(store, "bad", payload=b"other")
    cfg = bad.config.to_json()
    cfg["created"] = 1e20
    _overwrite_config(store, bad, cfg)
    assert [i.id for i in store.images()] == [good.id]
    listed = {i.id: i for i in store.images(broken=True)}
    assert listed[good.id].problem == ""
    assert listed[bad.id].problem == "image config: 'created' must be an RFC 3339 time"
    assert listed[bad.id].names == ("docker.io/library/bad:latest",)
    with pytest.raises(InvalidArgumentError, match=r"unusable.*'created'.*remove it with rmi"):
        store.resolve("bad")
    assert store.resolve("bad", broken=True).id == bad.id
    store.remove(store.resolve("bad", broken=True))
    assert [i.id for i in store.images(broken=True)] == [good.id]
