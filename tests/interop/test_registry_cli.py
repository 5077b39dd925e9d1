"""The registry verbs through their faces: the ``nbcontainer`` CLI in a subprocess, and ``%container``
in a real IPython ``InteractiveShell``, against ``docker-registry`` on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from nbcontainer.oci import MT_OCI_INDEX, MT_OCI_MANIFEST, Descriptor, Digest, Index, Platform
from nbcontainer.store import ImageStore
from nbcontainer.transfer.registry.client import PullResult, RegistryClient


def _layers() -> list[dict[str, bytes]]:
    return [
        {"bin/hello": b"#!/bin/sh\necho hello\n" * 50, "etc/os-release": b"ID=cli\n"},
        {"data/blob.bin": os.urandom(200_000)},
    ]


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private ``$DOCKER_CONFIG``, for the subprocesses and for this process alike."""
    path = tmp_path / "docker"
    monkeypatch.setenv("DOCKER_CONFIG", str(path))
    return path


def nbc(root: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nbcontainer", "--root", str(root), *args],
                          check=False, capture_output=True, text=True, input=stdin, timeout=120)


def test_cli_push_then_pull_prints_docker_lines_and_the_image_is_listed_unpacked_and_inspectable(
        tmp_path, registry, make_image, docker_config):
    src, dst = tmp_path / "src", tmp_path / "dst"
    img = make_image(ImageStore(src), "demo:1", _layers())
    ref = f"{registry.host}/demo:1"

    pushed = nbc(src, "push", "demo:1", ref)
    assert pushed.returncode == 0, pushed.stderr
    out = pushed.stdout.splitlines()
    assert out[0] == f"The push refers to repository [{registry.host}/demo]"
    assert sum(line.endswith(": Pushed") for line in out) == 2
    assert out[-1].startswith("1: digest: sha256:")
    digest = out[-1].split()[2]

    pulled = nbc(dst, "pull", ref)
    assert pulled.returncode == 0, pulled.stderr
    out = pulled.stdout.splitlines()
    assert out[0] == "1: Pulling from demo"
    for layer in ("Pulling fs layer", "Download complete", "Extracting", "Pull complete"):
        assert sum(line.endswith(f": {layer}") for line in out) == 2, (layer, out)
    assert out[-3:] == [f"Digest: {digest}", f"Status: Downloaded newer image for {ref}", ref]
    assert pulled.stderr == ""

    again = nbc(dst, "pull", ref)
    assert again.stdout.splitlines()[-2] == f"Status: Image is up to date for {ref}"

    rows = [json.loads(line) for line in nbc(dst, "--format", "json", "images").stdout.splitlines()]
    assert [(r["repository"], r["tag"], r["id"]) for r in rows] == [(f"{registry.host}/demo", "1", img.id)]

    info = json.loads(nbc(dst, "inspect", ref).stdout)[0]
    assert info["RepoDigests"] == [f"{registry.host}/demo@{digest}"]
    assert info["RepoTags"] == [ref]
    upper = Path(info["GraphDriver"]["Data"]["UpperDir"])
    lower = Path(info["GraphDriver"]["Data"]["LowerDir"])
    assert (upper / "data/blob.bin").stat().st_size == 200_000
    assert (lower / "bin/hello").read_bytes().startswith(b"#!/bin/sh")


def test_cli_pull_by_digest_quietly_prints_only_the_reference(tmp_path, registry, make_image, docker_config):
    img = make_image(ImageStore(tmp_path / "src"), "q:1", _layers())
    digest = RegistryClient().push(ImageStore(tmp_path / "src"), img, f"{registry.host}/q:1")
    by_digest = f"{registry.host}/q@{digest}"
    res = nbc(tmp_path / "dst", "pull", "-q", by_digest)
    assert (res.returncode, res.stdout, res.stderr) == (0, by_digest + "\n", "")


def test_cli_pull_of_an_unknown_tag_exits_1_with_one_error_line_naming_the_url(
        tmp_path, registry, docker_config):
    res = nbc(tmp_path / "dst", "pull", f"{registry.host}/nope:latest")
    assert res.returncode == 1
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"Error: manifest for {registry.host}/nope:latest not found")
    assert f"http://{registry.host}/v2/nope/manifests/latest" in lines[0]


def test_cli_login_with_password_stdin_then_push_and_logout(
        tmp_path, auth_registry, registry_credentials, make_image, docker_config):
    user, password = registry_credentials
    host = auth_registry.host
    make_image(ImageStore(tmp_path / "src"), "a:1", _layers())

    refused = nbc(tmp_path / "src", "push", "a:1", f"{host}/a:1")
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1 and host in refused.stderr

    wrong = nbc(tmp_path / "src", "login", "-u", user, "--password-stdin", host, stdin="nope\n")
    assert wrong.returncode == 1
    assert wrong.stderr == (f"Error: login to {host} failed: "
                            "401 unauthorized: incorrect username or password\n")

    ok = nbc(tmp_path / "src", "login", "-u", user, "--password-stdin", host, stdin=password + "\n")
    assert (ok.returncode, ok.stdout) == (0, "Login Succeeded\n")
    assert host in json.loads((docker_config / "config.json").read_text())["auths"]
    assert nbc(tmp_path / "src", "push", "-q", "a:1", f"{host}/a:1").stdout == f"{host}/a:1\n"

    assert nbc(tmp_path / "src", "logout", host).stdout == f"Removing login credentials for {host}\n"
    assert nbc(tmp_path / "src", "logout", host).stdout == f"Not logged in to {host}\n"


def _push_index(tmp_path: Path, host: str, make_image) -> str:
    store = ImageStore(tmp_path / "multi")
    client = RegistryClient()
    entries = []
    for arch, variant in (("amd64", ""), ("arm64", "v8")):
        img = make_image(store, f"m:{arch}", [{"arch": arch.encode()}], arch=arch, variant=variant)
        digest = client.push(store, img, f"{host}/multi:{arch}")
        size = len(client.manifest_inspect(f"{host}/multi@{digest}").raw)
        entries.append(Descriptor(MT_OCI_MANIFEST, Digest(digest), size,
                                  platform=Platform(arch, "linux", variant)))
    body = Index(tuple(entries)).to_bytes()
    r = httpx.put(f"http://{host}/v2/multi/manifests/1", content=body, headers={"Content-Type": MT_OCI_INDEX})
    assert r.status_code == 201, r.text
    return str(Digest.of(body))


def test_cli_manifest_inspect_lists_the_platforms_of_an_index_and_json_is_the_raw_index(
        tmp_path, registry, make_image, docker_config):
    digest = _push_index(tmp_path, registry.host, make_image)
    table = nbc(tmp_path / "s", "manifest-inspect", f"{registry.host}/multi:1").stdout.splitlines()
    assert table[0].split() == ["PLATFORM", "MEDIA", "TYPE", "DIGEST", "SIZE"]
    assert [line.split()[0] for line in table[1:]] == ["linux/amd64", "linux/arm64/v8"]
    raw = nbc(tmp_path / "s", "--format", "json", "manifest-inspect", f"{registry.host}/multi:1").stdout
    remote = RegistryClient().manifest_inspect(f"{registry.host}/multi:1")
    assert remote.digest == digest and json.loads(raw) == remote.to_json()


# -- %container in a real InteractiveShell ---------------------------------------------------------


@pytest.fixture(scope="module")
def shell(tmp_path_factory: pytest.TempPathFactory) -> InteractiveShell:
    os.environ.setdefault("IPYTHONDIR", str(tmp_path_factory.mktemp("ipython")))
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "nbcontainer")
    return sh


def test_magic_manifest_inspect_returns_a_typed_frame_of_layers_and_of_platforms(
        tmp_path, registry, make_image, shell, docker_config):
    img = make_image(ImageStore(tmp_path / "src"), "x:1", _layers())
    RegistryClient().push(ImageStore(tmp_path / "src"), img, f"{registry.host}/x:1")
    root = tmp_path / "store"
    df = shell.run_line_magic("container", f"--root {root} manifest-inspect 127.0.0.1:{registry.port}/x:1")
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["layer", "media_type", "digest", "size"]
    assert df["size"].dtype == "int64" and df["layer"].dtype == "int64"
    remote = RegistryClient().manifest_inspect(f"{registry.host}/x:1")
    assert list(df["size"]) == [layer.size for layer in remote.manifest.layers]
    assert list(df["media_type"]) == ["application/vnd.oci.image.layer.v1.tar+gzip"] * 2

    _push_index(tmp_path, registry.host, make_image)
    idx = shell.run_line_magic("container", f"--root {root} manifest-inspect {registry.host}/multi:1")
    assert list(idx["platform"]) == ["linux/amd64", "linux/arm64/v8"]
    assert list(idx["variant"]) == ["", "v8"] and idx["size"].dtype == "int64"


def test_magic_pull_returns_the_closing_lines_and_the_pull_result(
        tmp_path, registry, make_image, shell, docker_config, capsys):
    img = make_image(ImageStore(tmp_path / "src"), "p:1", _layers())
    digest = RegistryClient().push(ImageStore(tmp_path / "src"), img, f"{registry.host}/p:1")
    root = tmp_path / "store"
    out = shell.run_line_magic("container", f"--root {root} pull {registry.host}/p:1")
    assert out.lines[-3:] == [f"Digest: {digest}", f"Status: Downloaded newer image for {registry.host}/p:1",
                              f"{registry.host}/p:1"]
    assert isinstance(out.value, PullResult) and out.value.image.id == img.id
    assert "Status:" not in capsys.readouterr().out  # shown once: as the value, not also printed
    images = shell.run_line_magic("container", f"--root {root} images")
    assert list(images["repository"]) == [f"{registry.host}/p"]


def test_magic_pull_of_an_unknown_repository_is_one_usage_error(tmp_path, registry, shell, docker_config):
    with pytest.raises(UsageError) as info:
        shell.run_line_magic("container", f"--root {tmp_path / 'store'} pull {registry.host}/nope:1")
    assert type(info.value) is UsageError
    assert str(info.value).startswith(f"manifest for {registry.host}/nope:1 not found")
