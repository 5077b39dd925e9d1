"""Images committed here run under podman; images podman saved run here (busybox and Debian)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from nbc_podman import podman_fixture

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root"),
    pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="busybox-static is not installed"),
    pytest.mark.skipif(shutil.which("podman") is None or shutil.which("runc") is None,
                       reason="podman and runc are not installed (apt-get install podman runc)"),
]

podman = podman_fixture()


def test_our_committed_image_runs_under_podman_with_the_change_and_the_deletion(
        busybox_engine, podman, tmp_path):
    e = busybox_engine
    e.run("busybox", ["sh", "-c", "echo this is a testfile > /tmp/testfile; rm /etc/os-release"], name="c1")
    e.commit("c1", "testfile:1", message="tutorial")
    e.rm("c1")
    archive = tmp_path / "testfile.tar"
    e.save("testfile:1", archive)
    podman("load", "-i", str(archive))
    out = podman("run", "--rm", "--network", "none", "testfile:1", "sh", "-c",
                 "cat /tmp/testfile; test -e /etc/os-release && echo present || echo absent")
    assert out == "this is a testfile\nabsent\n"
    history = podman("history", "--format", "{{.Comment}}", "testfile:1")
    assert "tutorial" in history


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_busybox_saved_by_podman_loads_and_runs_here(busybox_engine, podman, tmp_path, fmt):
    e = busybox_engine
    rootfs = tmp_path / "rootfs.tar"
    img = e.image("busybox")
    rootfs.write_bytes(e.store.content.read(img.manifest.layers[0].digest))
    podman("import", "--change", "CMD [\"sh\"]", str(rootfs), "localhost/pbox:1")
    podman("run", "--name", "pc", "--network", "none", "localhost/pbox:1",
           "sh", "-c", "echo from podman > /made")
    podman("commit", "-f", "docker", "-m", "podman layer", "pc", "localhost/pbox:2")
    out = tmp_path / f"pbox.{fmt}.tar"
    podman("save", "--format", fmt, "-o", str(out), "localhost/pbox:2")
    e.rmi("busybox", force=True)
    loaded = e.load(out)
    name = loaded[0].names[0] if loaded[0].names else str(loaded[0].image.id)
    r = e.run(name, ["cat", "/made"], remove=True)
    assert r.exit_code == 0 and r.stdout == b"from podman\n"
    assert len(e.layers(name)) == 2


@pytest.fixture(scope="module")
def debian_tar(tmp_path_factory):
    if shutil.which("mmdebstrap") is None:
        pytest.skip("mmdebstrap is not installed")
    out = tmp_path_factory.mktemp("debian") / "debian.tar"
    # Not --quiet: that hides apt's own errors, the only place that says why a mirror failed.
    proc = subprocess.run(["mmdebstrap", "--variant=minbase", "bookworm", str(out)],
                          capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        errors = "\n".join(line for line in proc.stderr.splitlines() if not line.startswith("I: "))
        unreachable = ("Temporary failure resolving", "Could not resolve", "Could not connect")  # apt's words
        if any(m in proc.stderr for m in unreachable):
            pytest.skip(f"mmdebstrap could not reach a Debian mirror: {errors[-300:]}")
        pytest.fail(f"mmdebstrap failed ({proc.returncode}):\n{errors[-3000:]}")
    return out


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_debian_minbase_saved_by_podman_loads_and_runs_here(engine, podman, debian_tar, tmp_path, fmt):
    podman("import", "--change", "CMD [\"bash\"]", str(debian_tar), "localhost/deb:min")
    out = tmp_path / f"deb.{fmt}.tar"
    podman("save", "--format", fmt, "-o", str(out), "localhost/deb:min")
    loaded = engine.load(out)
    name = loaded[0].names[0] if loaded[0].names else str(loaded[0].image.id)
    r = engine.run(name, ["sh", "-c", "cat /etc/debian_version; id -u"], remove=True)
    assert r.exit_code == 0, r.stderr
    version, uid = r.stdout.decode().split()
    assert version.startswith("12") and uid == "0"
