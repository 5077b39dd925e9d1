"""save/load of image archives: round trips in every format, foreign layouts, and hostile input."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import os
import platform
import tarfile
from pathlib import Path

import pytest
import zstandard

from nbcontainer.errors import (
    DigestMismatchError,
    InvalidArgumentError,
    NbContainerError,
    NotFoundError,
    UnsafeArchiveError,
)
from nbcontainer.oci import (
    MT_OCI_CONFIG,
    MT_OCI_INDEX,
    MT_OCI_LAYER,
    MT_OCI_MANIFEST,
    Descriptor,
    Digest,
    History,
    ImageConfig,
    Index,
    Manifest,
    canonical_json,
)
from nbcontainer.store import Image, ImageStore
from nbcontainer.transfer.archive.sources import FORMATS, format_loaded, load, save

# -- helpers -----------------------------------------------------------------------------------


def make_layer(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1700000000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_image(store: ImageStore, name: str | None = "busybox:latest",
               layers: list[dict[str, bytes]] | None = None, cmd: str = "sh") -> Image:
    layers = layers if layers is not None else [{"bin/sh": b"#!shell\n"}, {"etc/motd": b"hello\n" * 100}]
    descs = []
    for files in layers:
        data = make_layer(files)
        descs.append(Descriptor(MT_OCI_LAYER, store.content.put(data), len(data)))
    config = ImageConfig(
        architecture="amd64", created="2024-05-01T10:00:00Z", config={"Cmd": [cmd]},
        diff_ids=tuple(d.digest for d in descs),
        history=tuple(History(created="2024-05-01T10:00:00Z", created_by=f"ADD layer{i}")
                      for i in range(len(descs))),
    )
    return store.add_image(config, descs, name)


def snapshot(store: ImageStore) -> tuple:
    """What a failed load must leave unchanged: listed images and the blobs they reference."""
    images = sorted((i.id, i.manifest_digest, i.names) for i in store.images())
    return images, sorted(store.referenced_blobs())


def write_tar(path: Path, members: list[tuple[str, bytes | str]], *, links: dict[str, str] | None = None,
              hardlinks: dict[str, str] | None = None) -> Path:
    """A tar with file members (bytes) and symlinks (``links``: name -> target)."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            raw = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
        for name, target in (hardlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.LNKTYPE, target
            tar.addfile(info)
    return path


def tar_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "src-store")


@pytest.fixture
def dest(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "dest-store")


@pytest.fixture
def image(store: ImageStore) -> Image:
    return make_image(store)


def assert_same_image(loaded: Image, original: Image, store: ImageStore, dest: ImageStore) -> None:
    assert loaded.id == original.id
    assert loaded.config.diff_ids == original.config.diff_ids
    assert [x.digest for x in loaded.manifest.layers] == list(original.config.diff_ids)
    assert all(x.media_type == MT_OCI_LAYER for x in loaded.manifest.layers)
    for layer in original.manifest.layers:
        assert dest.content.read(layer.digest) == store.content.read(layer.digest)
    assert dest.content.read(loaded.id) == store.content.read(original.id)


# -- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("compress", [None, "gzip", "zstd"])
def test_save_then_load_keeps_image_id_names_and_layers(tmp_path, store, dest, image, fmt, compress):
    out = tmp_path / "img.tar"
    save(store, [(image, ["busybox:latest", "localhost:5000/x:1"])], out, format=fmt, compress=compress)
    loaded = load(dest, out)
    assert len(loaded) == 1
    assert_same_image(loaded[0].image, image, store, dest)
    assert loaded[0].names == ["docker.io/library/busybox:latest", "localhost:5000/x:1"]
    assert dest.resolve("busybox").id == image.id
    assert dest.resolve("localhost:5000/x:1").id == image.id
    assert format_loaded(loaded) == ["Loaded image: busybox:latest", "Loaded image: localhost:5000/x:1"]


def test_uncompressed_round_trip_keeps_the_manifest_digest(tmp_path, store, dest, image):
    save(store, [(image, ["busybox:latest"])], tmp_path / "a.tar")
    assert load(dest, tmp_path / "a.tar")[0].image.manifest_digest == image.manifest_digest


def test_default_archive_is_both_a_docker_archive_and_an_oci_layout(tmp_path, store, image):
    out = tmp_path / "a.tar"
    save(store, [(image, ["busybox:latest"])], out)
    files = tar_members(out)
    hexes = {d.hex for d in (image.id, image.manifest_digest, *image.config.diff_ids)}
    assert set(files) == {f"blobs/sha256/{h}" for h in hexes} | {
        "index.json", "manifest.json", "oci-layout", "repositories"}
    manifest_json = json.loads(files["manifest.json"])
    assert manifest_json == [{
        "Config": f"blobs/sha256/{image.id.hex}",
        "RepoTags": ["busybox:latest"],
        "Layers": [f"blobs/sha256/{d.hex}" for d in image.config.diff_ids],
    }]
    index = json.loads(files["index.json"])
    assert index["manifests"][0]["digest"] == image.manifest_digest
    assert index["manifests"][0]["annotations"] == {
        "io.containerd.image.name": "docker.io/library/busybox:latest",
        "org.opencontainers.image.ref.name": "latest",
    }
    assert json.loads(files["repositories"]) == {"busybox": {"latest": image.config.diff_ids[-1].hex}}
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}


def test_saved_tar_is_deterministic_sorted_and_owned_by_root(tmp_path, store, image):
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    save(store, [(image, ["busybox:latest"])], a, compress="gzip")
    save(store, [(image, ["busybox:latest"])], b, compress="gzip")
    assert a.read_bytes() == b.read_bytes()
    with tarfile.open(a) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members)
    assert a.stat().st_size % tarfile.RECORDSIZE == 0


def test_compressed_save_rewrites_manifest_but_not_diff_ids(tmp_path, store, image):
    out = tmp_path / "a.tar"
    save(store, [(image, ["busybox:latest"])], out, format="oci-archive", compress="zstd")
    files = tar_members(out)
    index = Index.from_bytes(files["index.json"])
    manifest = Manifest.from_bytes(files[f"blobs/sha256/{index.manifests[0].digest.hex}"])
    assert manifest.config.digest == image.id
    assert [x.media_type for x in manifest.layers] == ["application/vnd.oci.image.layer.v1.tar+zstd"] * 2
    for layer, diff_id in zip(manifest.layers, image.config.diff_ids, strict=True):
        blob = files[f"blobs/sha256/{layer.digest.hex}"]
        assert Digest.of(blob) == layer.digest != diff_id
        assert Digest.of(zstandard.ZstdDecompressor().stream_reader(blob).read()) == diff_id


def test_save_to_a_stream_gives_the_same_bytes_as_to_a_file(tmp_path, store, image):
    save(store, [(image, ["busybox:latest"])], tmp_path / "a.tar")
    buf = io.BytesIO()
    save(store, [(image, ["busybox:latest"])], buf)
    assert buf.getvalue() == (tmp_path / "a.tar").read_bytes()


def test_save_into_a_missing_directory_is_one_line_error(tmp_path, store, image):
    with pytest.raises(InvalidArgumentError, match="cannot write"):
        save(store, [(image, [])], tmp_path / "no" / "such" / "a.tar")


def test_save_reports_progress_in_bytes(tmp_path, store, image):
    seen: list[int] = []
    save(store, [(image, [])], tmp_path / "a.tar", progress=seen.append)
    layer_bytes = sum(x.size for x in image.manifest.layers)
    assert sum(seen) >= layer_bytes


def test_shared_layers_are_written_once_and_both_images_load(tmp_path, store, dest):
    base = {"bin/sh": b"#!shell\n"}
    one = make_image(store, "one:1", [base, {"a": b"1"}])
    two = make_image(store, "two:2", [base, {"b": b"2"}], cmd="ls")
    out = tmp_path / "a.tar"
    save(store, [(one, ["one:1"]), (two, ["two:2"]), (one, ["one:latest"])], out)
    files = tar_members(out)
    assert len([n for n in files if n.startswith("blobs/")]) == 3 + 2 + 2  # layers, configs, manifests
    loaded = load(dest, out)
    assert [x.image.id for x in loaded] == [one.id, two.id]
    assert loaded[0].names == ["docker.io/library/one:1", "docker.io/library/one:latest"]


def test_unnamed_image_round_trips_and_prints_its_id(tmp_path, store, dest):
    img = make_image(store, None)
    save(store, [(img, [])], tmp_path / "a.tar")
    loaded = load(dest, tmp_path / "a.tar")
    assert loaded[0].names == [] and loaded[0].image.id == img.id
    assert format_loaded(loaded) == [f"Loaded image ID: {img.id}"]
    assert [i.id for i in dest.images()] == [img.id]


def test_save_refuses_unknown_format_compression_and_digest_names(tmp_path, store, image):
    with pytest.raises(InvalidArgumentError, match="format"):
        save(store, [(image, [])], tmp_path / "a.tar", format="tarball")
    with pytest.raises(InvalidArgumentError, match="compression"):
        save(store, [(image, [])], tmp_path / "a.tar", compress="lz4")
    with pytest.raises(InvalidArgumentError, match="digest"):
        save(store, [(image, [f"busybox@{image.manifest_digest}"])], tmp_path / "a.tar")
    assert not list(tmp_path.glob("*a.tar*"))


# -- foreign layouts ---------------------------------------------------------------------------


def legacy_docker_archive(path: Path, layers: list[bytes], *, tag: str = "legacy:1",
                          config_name: str | None = None, config: bytes | None = None) -> tuple[Path, str]:
    """``docker save`` < 25: ``<v1id>/layer.tar`` dirs (a repeated layer is a symlink), ``<id>.json``."""
    diff_ids = [Digest.of(x) for x in layers]
    if config is None:
        config = canonical_json({
            "architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": f"step {i}"} for i in range(len(layers))],
        })
    image_id = Digest.of(config)
    members: list[tuple[str, bytes | str]] = [(config_name or f"{image_id.hex}.json", config)]
    links: dict[str, str] = {}
    layer_paths, first = [], {}
    for i, data in enumerate(layers):
        v1 = hashlib.sha256(f"v1-{i}".encode()).hexdigest()
        layer_paths.append(f"{v1}/layer.tar")
        members += [(f"{v1}/VERSION", "1.0"), (f"{v1}/json", json.dumps({"id": v1}))]
        if diff_ids[i] in first:
            links[f"{v1}/layer.tar"] = f"../{first[diff_ids[i]]}/layer.tar"
        else:
            first[diff_ids[i]] = v1
            members.append((f"{v1}/layer.tar", data))
    members.append(("manifest.json", json.dumps(
        [{"Config": config_name or f"{image_id.hex}.json", "RepoTags": [tag], "Layers": layer_paths}])))
    members.append(("repositories", json.dumps({tag.split(":")[0]: {tag.split(":")[1]: v1}})))
    return write_tar(path, members, links=links), image_id


def test_legacy_docker_archive_with_layer_dirs_and_symlinked_layer_loads(tmp_path, dest):
    a, b = make_layer({"bin/sh": b"x"}), make_layer({"etc/hosts": b"127.0.0.1 localhost\n"})
    path, image_id = legacy_docker_archive(tmp_path / "legacy.tar", [a, b, a])
    loaded = load(dest, path)
    assert loaded[0].image.id == image_id
    assert loaded[0].names == ["docker.io/library/legacy:1"]
    assert [x.digest for x in loaded[0].image.manifest.layers] == [Digest.of(a), Digest.of(b), Digest.of(a)]
    assert dest.content.read(Digest.of(b)) == b


@pytest.mark.parametrize("kind", ["gzip", "xz", "zstd"])
def test_compressed_outer_tar_loads(tmp_path, store, dest, image, kind):
    out = tmp_path / "a.tar"
    save(store, [(image, ["busybox:latest"])], out)
    data = out.read_bytes()
    packed = {"gzip": gzip.compress, "xz": lzma.compress,
              "zstd": zstandard.ZstdCompressor().compress}[kind](data)
    (tmp_path / "a.tar.x").write_bytes(packed)
    assert load(dest, tmp_path / "a.tar.x")[0].image.id == image.id
    assert not list((dest.root / "ingest").iterdir())


def test_gzip_layers_in_a_docker_archive_are_stored_uncompressed(tmp_path, dest):
    layer = make_layer({"bin/sh": b"x" * 1000})
    path, image_id = legacy_docker_archive(tmp_path / "a.tar", [gzip.compress(layer)],
                                           config=canonical_json({
                                               "architecture": "amd64", "os": "linux",
                                               "rootfs": {"type": "layers", "diff_ids": [Digest.of(layer)]}}))
    img = load(dest, path)[0].image
    assert img.id == image_id
    assert dest.content.read(Digest.of(layer)) == layer


def test_oci_layout_directory_loads(tmp_path, store, dest, image):
    save(store, [(image, ["busybox:latest"])], tmp_path / "a.tar", format="oci-archive", compress="gzip")
    layout = tmp_path / "layout"
    with tarfile.open(tmp_path / "a.tar") as tar:
        tar.extractall(layout, filter="data")
    loaded = load(dest, layout)
    assert loaded[0].image.id == image.id and loaded[0].names == ["docker.io/library/busybox:latest"]


def test_a_store_root_is_itself_a_loadable_oci_layout(tmp_path, store, dest, image):
    make_image(store, "other:2", [{"x": b"y"}])
    loaded = load(dest, store.root)
    assert sorted(n for x in loaded for n in x.names) == [
        "docker.io/library/busybox:latest", "docker.io/library/other:2"]


def oci_archive(path: Path, store: ImageStore, image: Image, index_entries: list[dict],
                extra_blobs: dict[str, bytes] | None = None) -> Path:
    blobs = {d: store.content.read(d) for d in (image.id, image.manifest_digest, *image.config.diff_ids)}
    blobs.update(extra_blobs or {})
    members: list[tuple[str, bytes | str]] = [(f"blobs/sha256/{Digest(d).hex}", b) for d, b in blobs.items()]
    members.append(("oci-layout", '{"imageLayoutVersion":"1.0.0"}'))
    members.append(("index.json", json.dumps({"schemaVersion": 2, "manifests": index_entries})))
    return write_tar(path, members)


def test_nested_index_loads_the_manifest_for_this_host(tmp_path, store, dest, image):
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    mine = Descriptor(MT_OCI_MANIFEST, image.manifest_digest, store.content.size(image.manifest_digest))
    other = make_image(store, None, [{"other": b"arch"}])
    theirs = Descriptor(MT_OCI_MANIFEST, other.manifest_digest, store.content.size(other.manifest_digest))
    nested = Index((
        Descriptor(theirs.media_type, theirs.digest, theirs.size, platform=_platform("s390x")),
        Descriptor(mine.media_type, mine.digest, mine.size, platform=_platform(arch)),
    )).to_bytes()
    entry = {"mediaType": MT_OCI_INDEX, "digest": Digest.of(nested), "size": len(nested),
             "annotations": {"io.containerd.image.name": "docker.io/library/multi:1",
                             "org.opencontainers.image.ref.name": "1"}}
    path = oci_archive(tmp_path / "a.tar", store, image, [entry], {Digest.of(nested): nested})
    loaded = load(dest, path)
    assert [(x.image.id, x.names) for x in loaded] == [(image.id, ["docker.io/library/multi:1"])]


def _platform(arch: str):
    from nbcontainer.oci import Platform

    return Platform(arch, "linux")


@pytest.mark.parametrize("annotations, names", [
    ({"org.opencontainers.image.ref.name": "latest"}, []),
    ({"org.opencontainers.image.ref.name": "localhost/bb:1"}, ["localhost/bb:1"]),
    ({"org.opencontainers.image.ref.name": "latest", "io.containerd.image.name": "docker.io/library/a:b"},
     ["docker.io/library/a:b"]),
])
def test_oci_names_come_from_containerd_or_a_full_ref_name_never_a_bare_tag(
        tmp_path, store, dest, image, annotations, names):
    entry = {"mediaType": MT_OCI_MANIFEST, "digest": image.manifest_digest,
             "size": store.content.size(image.manifest_digest), "annotations": annotations}
    loaded = load(dest, oci_archive(tmp_path / "a.tar", store, image, [entry]))
    assert loaded[0].names == names and loaded[0].image.id == image.id


# -- idempotence -------------------------------------------------------------------------------


def test_loading_the_same_image_twice_adds_nothing(tmp_path, store, dest, image):
    save(store, [(image, ["busybox:latest"])], tmp_path / "a.tar")
    save(store, [(image, ["busybox:latest"])], tmp_path / "b.tar", format="oci-archive", compress="gzip")
    first = load(dest, tmp_path / "a.tar")
    before = snapshot(dest), (dest.root / "index.json").read_bytes()
    again = load(dest, tmp_path / "a.tar") + load(dest, tmp_path / "b.tar")
    assert (snapshot(dest), (dest.root / "index.json").read_bytes()) == before
    assert {x.image.id for x in again} == {first[0].image.id}
    assert len(dest.images()) == 1


# -- bad input ---------------------------------------------------------------------------------


@pytest.fixture
def busy_dest(dest: ImageStore) -> ImageStore:
    """A destination that already holds an image, which a failed load must leave intact."""
    make_image(dest, "keep:me", [{"keep": b"me"}])
    return dest


def assert_load_fails(dest: ImageStore, path: Path, error: type[NbContainerError],
                      match: str | None = None) -> None:
    before = snapshot(dest)
    with pytest.raises(error, match=match) as info:
        load(dest, path)
    assert "\n" not in str(info.value)
    assert snapshot(dest) == before
    assert dest.resolve("keep:me")
    assert not list((dest.root / "ingest").iterdir())


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/etc/evil"])
def test_member_escaping_the_archive_is_refused(tmp_path, store, busy_dest, image, name):
    save(store, [(image, ["busybox:latest"])], tmp_path / "ok.tar")
    members = [*tar_members(tmp_path / "ok.tar").items(), (name, b"boom")]
    path = write_tar(tmp_path / "bad.tar", members)
    assert_load_fails(busy_dest, path, UnsafeArchiveError)


@pytest.mark.parametrize("target", ["/etc/passwd", "../outside.json", "a/../../outside.json"])
def test_symlinked_manifest_json_leaving_the_archive_is_refused(tmp_path, store, busy_dest, image, target):
    save(store, [(image, ["busybox:latest"])], tmp_path / "ok.tar", format="docker-archive")
    members = [m for m in tar_members(tmp_path / "ok.tar").items() if m[0] != "manifest.json"]
    path = write_tar(tmp_path / "bad.tar", members, links={"manifest.json": target})
    assert_load_fails(busy_dest, path, UnsafeArchiveError, "manifest.json")


def test_hardlink_leaving_the_archive_is_refused(tmp_path, busy_dest):
    path = write_tar(tmp_path / "bad.tar", [("x", b"1")], hardlinks={"manifest.json": "/etc/passwd"})
    assert_load_fails(busy_dest, path, UnsafeArchiveError)


def test_symlink_escape_in_a_layout_directory_is_refused(tmp_path, store, busy_dest, image):
    save(store, [(image, ["busybox:latest"])], tmp_path / "a.tar", format="oci-archive")
    layout = tmp_path / "layout"
    with tarfile.open(tmp_path / "a.tar") as tar:
        tar.extractall(layout, filter="data")
    (tmp_path / "outside.json").write_bytes((layout / "index.json").read_bytes())
    (layout / "index.json").unlink()
    (layout / "index.json").symlink_to("../outside.json")
    assert_load_fails(busy_dest, layout, UnsafeArchiveError)


@pytest.mark.parametrize("outer", ["plain", "gzip"])
def test_truncated_archive_is_refused(tmp_path, store, busy_dest, outer):
    big = make_image(store, "big:1", [{"blob": os.urandom(300_000)}])
    save(store, [(big, ["big:1"])], tmp_path / "a.tar")
    data = (tmp_path / "a.tar").read_bytes()
    if outer == "gzip":
        data = gzip.compress(data)
    (tmp_path / "cut.tar").write_bytes(data[: len(data) // 2])
    assert_load_fails(busy_dest, tmp_path / "cut.tar", InvalidArgumentError, "truncated")


def test_truncated_just_before_the_end_of_an_oci_archive_is_refused(tmp_path, store, busy_dest, image):
    save(store, [(image, ["busybox:latest"])], tmp_path / "a.tar", format="oci-archive")
    data = (tmp_path / "a.tar").read_bytes()
    with tarfile.open(tmp_path / "a.tar") as tar:
        last = tar.getmembers()[-1]
    (tmp_path / "cut.tar").write_bytes(data[: last.offset])
    assert_load_fails(busy_dest, tmp_path / "cut.tar", InvalidArgumentError, "truncated")


def test_config_not_matching_its_digest_is_refused(tmp_path, store, busy_dest, image):
    save(store, [(image, ["busybox:latest"])], tmp_path / "ok.tar", format="docker-archive")
    files = tar_members(tmp_path / "ok.tar")
    name = f"blobs/sha256/{image.id.hex}"
    files[name] = files[name].replace(b'"sh"', b'"rm"')
    path = write_tar(tmp_path / "bad.tar", list(files.items()))
    assert_load_fails(busy_dest, path, DigestMismatchError, "config")


def test_legacy_config_not_matching_its_file_name_is_refused(tmp_path, busy_dest):
    layer = make_layer({"a": b"b"})
    path, _ = legacy_docker_archive(tmp_path / "bad.tar", [layer], config_name="0" * 64 + ".json")
    assert_load_fails(busy_dest, path, DigestMismatchError, "config")


def test_oci_manifest_not_matching_its_descriptor_is_refused(tmp_path, store, busy_dest, image):
    entry = {"mediaType": MT_OCI_MANIFEST, "digest": image.manifest_digest,
             "size": store.content.size(image.manifest_digest)}
    good = oci_archive(tmp_path / "ok.tar", store, image, [entry])
    files = tar_members(good)
    name = f"blobs/sha256/{image.manifest_digest.hex}"
    files[name] = files[name].replace(b"schemaVersion", b"schemaversion")
    assert_load_fails(busy_dest, write_tar(tmp_path / "bad.tar", list(files.items())), DigestMismatchError)


def test_layer_not_matching_its_diff_id_is_refused(tmp_path, busy_dest):
    good, evil = make_layer({"a": b"good"}), make_layer({"a": b"evil"})
    config = canonical_json({"architecture": "amd64", "os": "linux",
                             "rootfs": {"type": "layers", "diff_ids": [Digest.of(good)]}})
    path, _ = legacy_docker_archive(tmp_path / "bad.tar", [evil], config=config)
    assert_load_fails(busy_dest, path, DigestMismatchError, "diff_id")
    assert not busy_dest.content.has(Digest.of(evil))


def test_compressed_layer_not_matching_its_blob_digest_is_refused(tmp_path, store, busy_dest, image):
    save(store, [(image, ["busybox:latest"])], tmp_path / "ok.tar", format="oci-archive", compress="gzip")
    files = tar_members(tmp_path / "ok.tar")
    index = Index.from_bytes(files["index.json"])
    manifest = Manifest.from_bytes(files[f"blobs/sha256/{index.manifests[0].digest.hex}"])
    name = f"blobs/sha256/{manifest.layers[0].digest.hex}"
    # Same uncompressed content (so the diff_id holds), different gzip bytes: the blob digest fails.
    files[name] = gzip.compress(gzip.decompress(files[name]), compresslevel=1, mtime=1)
    assert_load_fails(busy_dest, write_tar(tmp_path / "bad.tar", list(files.items())), DigestMismatchError)


def test_missing_layer_is_refused(tmp_path, store, busy_dest, image):
    save(store, [(image, ["busybox:latest"])], tmp_path / "ok.tar")
    files = tar_members(tmp_path / "ok.tar")
    del files[f"blobs/sha256/{image.config.diff_ids[1].hex}"]
    path = write_tar(tmp_path / "bad.tar", list(files.items()))
    assert_load_fails(busy_dest, path, NotFoundError, "missing from archive")


def test_unknown_format_is_refused(tmp_path, busy_dest):
    path = write_tar(tmp_path / "hello.tar", [("hello.txt", b"hi\n")])
    assert_load_fails(busy_dest, path, InvalidArgumentError,
                      r"not a docker-archive or OCI archive \(no manifest.json or index.json\)")


def test_a_file_that_is_not_a_tar_is_refused(tmp_path, busy_dest):
    (tmp_path / "x.tar").write_bytes(b"this is not a tar file at all" * 40)
    assert_load_fails(busy_dest, tmp_path / "x.tar", InvalidArgumentError, "not a tar")


def test_missing_archive_file_is_not_found(tmp_path, busy_dest):
    assert_load_fails(busy_dest, tmp_path / "nope.tar", NotFoundError)


def test_failed_load_of_a_second_image_registers_neither(tmp_path, store, busy_dest):
    one = make_image(store, "one:1", [{"a": b"1"}])
    two = make_image(store, "two:1", [{"b": b"2"}])
    save(store, [(one, ["one:1"]), (two, ["two:1"])], tmp_path / "ok.tar")
    files = tar_members(tmp_path / "ok.tar")
    del files[f"blobs/sha256/{two.config.diff_ids[0].hex}"]
    assert_load_fails(busy_dest, write_tar(tmp_path / "bad.tar", list(files.items())), NotFoundError)


def test_layer_count_not_matching_diff_ids_is_refused(tmp_path, busy_dest):
    layer = make_layer({"a": b"b"})
    config = canonical_json({"architecture": "amd64", "os": "linux",
                             "rootfs": {"type": "layers", "diff_ids": [Digest.of(layer)] * 2}})
    path, _ = legacy_docker_archive(tmp_path / "bad.tar", [layer], config=config)
    assert_load_fails(busy_dest, path, InvalidArgumentError, "diff_ids")


def test_config_media_type_in_rebuilt_manifest_is_oci(tmp_path, dest):
    layer = make_layer({"a": b"b"})
    path, _ = legacy_docker_archive(tmp_path / "a.tar", [layer])
    img = load(dest, path)[0].image
    assert img.manifest.config.media_type == MT_OCI_CONFIG


def test_load_reports_progress_in_archive_bytes(tmp_path, store, dest, image):
    save(store, [(image, ["busybox:latest"])], tmp_path / "a.tar", compress="gzip")
    seen: list[int] = []
    load(dest, tmp_path / "a.tar", progress=seen.append)
    assert 0 < sum(seen) < (tmp_path / "a.tar").stat().st_size
