"""Our archives in the real peers (skopeo, podman, umoci), and podman's archives in ours.

podman runs with its own ``--root``/``--runroot`` in a temp dir and the config PEERS.md asks for on
this machine (``CONTAINERS_CONF``), so nothing leaks into the host's container storage.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from nbc_podman import podman_fixture

from nbcontainer.oci import MT_OCI_LAYER, Descriptor, Digest, History, ImageConfig
from nbcontainer.store import Image, ImageStore
from nbcontainer.transfer.archive.sources import load, save

BUSYBOX = Path("/bin/busybox")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the peers' storage needs root")


def need(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install -y {tool})")


def run(argv: list[str], **kw) -> str:
    proc = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=300, **kw)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


# -- fixtures ----------------------------------------------------------------------------------


def busybox_rootfs_tar() -> bytes:
    """A rootfs: /bin/busybox plus a symlink per applet, as ``bootstrap busybox`` makes."""
    if not BUSYBOX.exists():
        pytest.skip("/bin/busybox missing (apt-get install -y busybox-static)")
    applets = run([str(BUSYBOX), "--list-full"]).split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({str(p) for a in applets for p in Path(a).parents if str(p) != "."} | {"etc"})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1700000000
            tar.addfile(info)
        data = BUSYBOX.read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode, info.mtime = len(data), 0o755, 1700000000
        tar.addfile(info, io.BytesIO(data))
        passwd = b"root:x:0:0:root:/root:/bin/sh\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size, info.mode, info.mtime = len(passwd), 0o644, 1700000000
        tar.addfile(info, io.BytesIO(passwd))
        for a in sorted(set(applets) - {"bin/busybox"}):
            info = tarfile.TarInfo(a)
            info.type, info.linkname, info.mtime = tarfile.SYMTYPE, "/bin/busybox", 1700000000
            tar.addfile(info)
    return buf.getvalue()


@pytest.fixture(scope="module")
def rootfs_tar() -> bytes:
    return busybox_rootfs_tar()


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "store")


@pytest.fixture
def image(store: ImageStore, rootfs_tar: bytes) -> Image:
    """A two-layer image: the busybox rootfs and a committed-looking change."""
    change = io.BytesIO()
    with tarfile.open(fileobj=change, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("tmp")
        info.type, info.mode = tarfile.DIRTYPE, 0o1777
        tar.addfile(info)
        data = b"this is a testfile\n"
        info = tarfile.TarInfo("tmp/testfile")
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    layers = []
    for blob in (rootfs_tar, change.getvalue()):
        layers.append(Descriptor(MT_OCI_LAYER, store.content.put(blob), len(blob)))
    config = ImageConfig(
        architecture="amd64", created="2024-05-01T10:00:00Z",
        config={"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
        diff_ids=tuple(x.digest for x in layers),
        history=(History(created="2024-05-01T10:00:00Z", created_by="bootstrap busybox"),
                 History(created="2024-05-01T10:00:01Z", created_by="/bin/sh -c echo …",
                         comment="testfile")),
    )
    return store.add_image(config, layers, "busybox:latest")


podman = podman_fixture()


def skopeo(*args: str, tmp: Path) -> str:
    need("skopeo")
    return run(["skopeo", *args], env={**os.environ, "TMPDIR": str(tmp)})


def layer_names(data: bytes) -> set[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name.removeprefix("./").rstrip("/") for m in tar} - {"", "."}


# -- ours in theirs ----------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["docker-archive", "oci-archive"])
@pytest.mark.parametrize("compress", [None, "gzip", "zstd"])
def test_skopeo_inspects_our_default_archive_as_both_transports(tmp_path, store, image, transport, compress):
    out = tmp_path / "busybox.tar"
    save(store, [(image, ["busybox:latest"])], out, compress=compress)
    info = json.loads(skopeo("inspect", f"{transport}:{out}", tmp=tmp_path))
    raw_config = skopeo("inspect", "--config", "--raw", f"{transport}:{out}", tmp=tmp_path)
    assert Digest.of(raw_config.encode()) == image.id
    assert json.loads(raw_config)["rootfs"]["diff_ids"] == list(image.config.diff_ids)
    assert len(info["Layers"]) == 2
    if transport == "docker-archive" or compress is None:
        assert info["Layers"] == list(image.config.diff_ids)  # docker-archive reports diff_ids
    else:
        assert info["Layers"] != list(image.config.diff_ids)  # compressed blob digests


@pytest.mark.parametrize("fmt", ["docker+oci", "docker-archive", "oci-archive"])
def test_podman_loads_our_archive_with_the_same_image_id(tmp_path, store, image, podman, fmt):
    out = tmp_path / "busybox.tar"
    save(store, [(image, ["busybox:latest"])], out, format=fmt)
    podman("load", "-i", str(out))
    inspected = json.loads(podman("image", "inspect", image.id.hex))[0]
    assert "sha256:" + inspected["Id"].removeprefix("sha256:") == image.id
    assert inspected["RootFS"]["Layers"] == list(image.config.diff_ids)
    # podman reads the OCI index's full name; from a bare docker-archive it files the familiar
    # RepoTag "busybox:latest" under localhost/, as it does for Docker's own archives.
    expected = "localhost/busybox:latest" if fmt == "docker-archive" else "docker.io/library/busybox:latest"
    assert inspected["RepoTags"] == [expected]


def test_podman_loads_our_zstd_compressed_archive(tmp_path, store, image, podman):
    out = tmp_path / "busybox.tar"
    save(store, [(image, ["busybox:latest"])], out, compress="zstd")
    podman("load", "-i", str(out))
    assert podman("image", "inspect", "--format", "{{.Id}}", "busybox:latest").strip() == image.id.hex


# -- theirs in ours ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_podman_saved_busybox_loads_into_ours_with_the_same_files(tmp_path, store, podman, rootfs_tar, fmt):
    (tmp_path / "rootfs.tar").write_bytes(rootfs_tar)
    podman("import", str(tmp_path / "rootfs.tar"), "localhost/bb:1")
    podman_id = podman("image", "inspect", "--format", "{{.Id}}", "localhost/bb:1").strip()
    out = tmp_path / f"bb-{fmt}.tar"
    podman("save", "--format", fmt, "-o", str(out), "localhost/bb:1")

    dest = ImageStore(tmp_path / "dest")
    loaded = load(dest, out)
    assert [(x.image.id, x.names) for x in loaded] == [("sha256:" + podman_id, ["localhost/bb:1"])]
    (layer,) = loaded[0].image.manifest.layers
    stored = dest.content.read(layer.digest)
    assert layer_names(stored) == layer_names(rootfs_tar)
    with tarfile.open(fileobj=io.BytesIO(stored)) as tar:
        member = next(m for m in tar if m.name.removeprefix("./") == "bin/busybox")
        assert tar.extractfile(member).read() == BUSYBOX.read_bytes()  # type: ignore[union-attr]
    assert load(dest, out)[0].image.id == loaded[0].image.id and len(dest.images()) == 1


# -- umoci -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["docker+oci", "oci-archive"])
def test_umoci_unpacks_our_oci_layout_to_the_layer_files(tmp_path, store, image, rootfs_tar, fmt):
    need("umoci")
    out = tmp_path / "busybox.tar"
    save(store, [(image, ["busybox:latest"])], out, format=fmt)
    layout = tmp_path / "layout"
    with tarfile.open(out) as tar:
        tar.extractall(layout, filter="data")
    bundle = tmp_path / "bundle"
    run(["umoci", "unpack", "--image", f"{layout}:latest", str(bundle)])
    rootfs = bundle / "rootfs"
    found = {str(p.relative_to(rootfs)) for p in rootfs.rglob("*")}
    expected = layer_names(rootfs_tar) | {"tmp", "tmp/testfile"}
    assert found == expected
    assert (rootfs / "bin/busybox").read_bytes() == BUSYBOX.read_bytes()
    assert (rootfs / "tmp/testfile").read_text() == "this is a testfile\n"
    assert os.readlink(rootfs / "bin/sh") == "/bin/busybox"
