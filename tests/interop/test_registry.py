"""Pull and push against the real distribution registry (``docker-registry``) on loopback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from nbcontainer.errors import DigestMismatchError, NotFoundError, RegistryError
from nbcontainer.oci import (
    MT_OCI_INDEX,
    MT_OCI_LAYER,
    MT_OCI_LAYER_GZIP,
    MT_OCI_MANIFEST,
    Descriptor,
    Digest,
    Index,
    Manifest,
    Platform,
)
from nbcontainer.store import ImageStore
from nbcontainer.transfer.registry.client import (
    ProgressEvent,
    RegistryClient,
    host_platform,
    repo_digests,
)

SKOPEO = shutil.which("skopeo")


@pytest.fixture
def client(tmp_path: Path) -> RegistryClient:
    with RegistryClient(config_path=tmp_path / "docker" / "config.json", timeout=10) as c:
        yield c


def _events(tmp_path: Path, **kw) -> tuple[RegistryClient, list[ProgressEvent]]:
    events: list[ProgressEvent] = []
    c = RegistryClient(config_path=tmp_path / "docker" / "config.json", timeout=10,
                       progress=events.append, **kw)
    return c, events


def _two_layers(i: int = 0) -> list[dict[str, bytes]]:
    return [
        {"bin/hello": b"#!/bin/sh\necho hello\n" * 50, "etc/os-release": f"ID=test{i}\n".encode()},
        {"data/blob.bin": os.urandom(300_000)},
    ]


def test_push_then_pull_into_empty_store_gives_same_image_and_layer_blobs(
        tmp_path, registry, client, make_image):
    src = ImageStore(tmp_path / "src")
    img = make_image(src, "demo:1", _two_layers())
    ref = f"{registry.host}/demo/app:1"
    digest = client.push(src, img, ref)

    remote = client.manifest_inspect(ref)
    assert remote.digest == digest
    assert [layer.media_type for layer in remote.manifest.layers] == [MT_OCI_LAYER_GZIP] * 2

    dst = ImageStore(tmp_path / "dst")
    c, events = _events(tmp_path)
    result = c.pull(dst, ref)
    assert result.image.id == img.id
    assert result.digest == digest
    assert result.status == f"Downloaded newer image for {ref}"
    assert [lr.diff_id for lr in result.layers] == list(img.config.diff_ids)
    for d in img.config.diff_ids:
        assert dst.content.read(d) == src.content.read(d)
    assert all(layer.media_type == MT_OCI_LAYER for layer in result.image.manifest.layers)
    assert repo_digests(result.image.manifest) == [f"{registry.host}/demo/app@{digest}"]
    assert dst.resolve(ref).id == img.id
    lines = [e.line() for e in events]
    assert "Pull complete" in {e.status for e in events}
    assert lines[-2:] == [f"Digest: {digest}", f"Status: Downloaded newer image for {ref}"]
    assert not list((dst.root / "ingest").iterdir())

    c2, _ = _events(tmp_path)
    again = c2.pull(dst, ref)
    assert again.status == f"Image is up to date for {ref}"
    assert again.image.manifest_digest == result.image.manifest_digest
    c.close()
    c2.close()


def test_pull_skips_layers_already_in_the_store(tmp_path, registry, client, make_image):
    store = ImageStore(tmp_path / "s")
    base = _two_layers()
    img = make_image(store, "a:1", base)
    client.push(store, img, f"{registry.host}/a:1")
    top = make_image(store, "b:1", [*base, {"extra.txt": b"more\n"}])
    client.push(store, top, f"{registry.host}/b:1")

    dst = ImageStore(tmp_path / "d")
    client.pull(dst, f"{registry.host}/a:1")
    c, _ = _events(tmp_path)
    res = c.pull(dst, f"{registry.host}/b:1")
    assert [lr.status for lr in res.layers] == ["Already exists", "Already exists", "Pull complete"]
    assert res.image.id == top.id
    c.close()


def test_push_again_finds_layers_with_head_and_mounts_across_repositories(tmp_path, registry, make_image):
    store = ImageStore(tmp_path / "s")
    img = make_image(store, "a:1", _two_layers())
    c, events = _events(tmp_path)
    d1 = c.push(store, img, f"{registry.host}/one:1")
    events.clear()
    assert c.push(store, img, f"{registry.host}/one:2") == d1
    assert [e.status for e in events].count("Layer already exists") == 2
    events.clear()
    assert c.push(store, img, f"{registry.host}/two:1") == d1
    assert [e.status for e in events].count("Mounted from one") == 2
    rd = repo_digests(store.resolve("a:1").manifest)
    assert f"{registry.host}/one@{d1}" in rd and f"{registry.host}/two@{d1}" in rd
    c.close()


def test_chunked_upload_of_blobs_above_the_threshold(tmp_path, registry, recording_front, client, make_image):
    store = ImageStore(tmp_path / "s")
    img = make_image(store, "big:1", [{"r.bin": os.urandom(600_000)}])
    digest = client.push(store, img, f"{recording_front.host}/big:1", chunk_size=128 << 10)
    patches = [entry for entry in recording_front.log if entry[0] == "PATCH"]
    assert len(patches) >= 4
    assert all("Content-Range" in h for _, _, h in patches)
    dst = ImageStore(tmp_path / "d")
    assert client.pull(dst, f"{registry.host}/big@{digest}").image.id == img.id


def test_pull_by_digest_records_the_repo_digest_without_a_tag(tmp_path, registry, client, make_image):
    store = ImageStore(tmp_path / "s")
    img = make_image(store, "x:1", _two_layers())
    digest = client.push(store, img, f"{registry.host}/x:1")
    dst = ImageStore(tmp_path / "d")
    res = client.pull(dst, f"{registry.host}/x@{digest}")
    assert res.digest == digest
    assert res.image.id == img.id
    assert res.image.names == ()
    assert repo_digests(res.image.manifest) == [f"{registry.host}/x@{digest}"]
    assert dst.resolve(img.id.short).id == img.id


def _push_index(tmp_path: Path, registry, client: RegistryClient, make_image) -> tuple[str, dict[str, str]]:
    store = ImageStore(tmp_path / "multi")
    entries = []
    ids = {}
    for arch, variant in (("amd64", ""), ("arm64", "v8")):
        img = make_image(store, f"m:{arch}", [{"arch": arch.encode()}], arch=arch, variant=variant)
        ids[arch] = img.id
        digest = client.push(store, img, f"{registry.host}/multi:{arch}")
        size = len(client.manifest_inspect(f"{registry.host}/multi@{digest}").raw)
        entries.append(Descriptor(MT_OCI_MANIFEST, Digest(digest), size,
                                  platform=Platform(arch, "linux", variant)))
    body = Index(tuple(entries)).to_bytes()
    r = httpx.put(f"http://{registry.host}/v2/multi/manifests/latest", content=body,
                  headers={"Content-Type": MT_OCI_INDEX})
    assert r.status_code == 201, r.text
    return str(Digest.of(body)), ids


def test_pull_of_an_index_picks_the_host_platform_or_the_one_asked_for(
        tmp_path, registry, client, make_image):
    index_digest, ids = _push_index(tmp_path, registry, client, make_image)
    host = host_platform().architecture
    dst = ImageStore(tmp_path / "d")
    res = client.pull(dst, f"{registry.host}/multi")
    assert res.digest == index_digest  # Docker prints the index digest
    if host in ids:
        assert res.image.id == ids[host]
        assert res.platform.architecture == host
    arm = client.pull(ImageStore(tmp_path / "e"), f"{registry.host}/multi:latest", platform="linux/arm64")
    assert arm.image.id == ids["arm64"]
    assert arm.image.config.architecture == "arm64"
    with pytest.raises(NotFoundError, match="no matching manifest for linux/s390x"):
        client.pull(ImageStore(tmp_path / "f"), f"{registry.host}/multi", platform="linux/s390x")


def test_manifest_inspect_lists_platforms_of_an_index_and_layers_of_a_manifest(tmp_path, registry, client,
                                                                              make_image):
    index_digest, _ = _push_index(tmp_path, registry, client, make_image)
    idx = client.manifest_inspect(f"{registry.host}/multi")
    assert idx.is_index and idx.digest == index_digest
    assert [str(m.platform) for m in idx.manifest.manifests] == ["linux/amd64", "linux/arm64/v8"]
    one = client.manifest_inspect(f"{registry.host}/multi", platform="linux/arm64")
    assert isinstance(one.manifest, Manifest)
    assert one.manifest.layers[0].media_type == MT_OCI_LAYER_GZIP
    assert one.to_json()["schemaVersion"] == 2


@pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed")
def test_skopeo_copy_from_our_store_layout_then_we_pull_it(tmp_path, registry, client, make_image):
    src = ImageStore(tmp_path / "src")
    img = make_image(src, "docker.io/library/foo:latest", _two_layers(3))
    dest = f"{registry.host}/x:1"
    subprocess.run([SKOPEO, "copy", "--quiet", f"oci:{src.root}:docker.io/library/foo:latest",
                    f"docker://{dest}", "--dest-tls-verify=false"], check=True, capture_output=True,
                   timeout=120)
    dst = ImageStore(tmp_path / "dst")
    res = client.pull(dst, dest)
    assert res.image.id == img.id
    for d in img.config.diff_ids:
        assert dst.content.read(d) == src.content.read(d)


@pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed")
def test_skopeo_inspects_and_copies_an_image_we_pushed(tmp_path, registry, client, make_image):
    store = ImageStore(tmp_path / "s")
    img = make_image(store, "y:1", _two_layers(4))
    digest = client.push(store, img, f"{registry.host}/y:1")
    out = subprocess.run([SKOPEO, "inspect", "--tls-verify=false", f"docker://{registry.host}/y:1"],
                         check=True, capture_output=True, text=True, timeout=60).stdout
    info = json.loads(out)
    assert info["Digest"] == digest
    assert len(info["Layers"]) == 2
    target = tmp_path / "copy"
    subprocess.run([SKOPEO, "copy", "--quiet", "--src-tls-verify=false", f"docker://{registry.host}/y:1",
                    f"dir:{target}"], check=True, capture_output=True, timeout=120)
    manifest = Manifest.from_bytes((target / "manifest.json").read_bytes())
    assert manifest.config.digest == img.id
    for layer in manifest.layers:
        assert (target / layer.digest.hex).stat().st_size == layer.size


def test_login_to_a_basic_auth_registry_checks_the_password_and_logout_forgets_it(
        tmp_path, auth_registry, registry_credentials, make_image):
    user, password = registry_credentials
    cfg = tmp_path / "docker" / "config.json"
    client = RegistryClient(config_path=cfg, timeout=10)
    store = ImageStore(tmp_path / "s")
    img = make_image(store, "z:1", _two_layers())
    ref = f"{auth_registry.host}/z:1"
    with pytest.raises(RegistryError) as err:
        client.push(store, img, ref)
    assert err.value.status == 401 and auth_registry.host in str(err.value)
    with pytest.raises(RegistryError) as err:
        client.login(auth_registry.host, user, "wrong")
    assert err.value.status == 401 and auth_registry.host in str(err.value)
    assert not cfg.exists()
    client.login(auth_registry.host, user, password)
    assert auth_registry.host in json.loads(cfg.read_text())["auths"]
    digest = client.push(store, img, ref)
    assert client.pull(ImageStore(tmp_path / "d"), ref).digest == digest
    client.logout(auth_registry.host)
    assert auth_registry.host not in json.loads(cfg.read_text())["auths"]
    with pytest.raises(RegistryError) as err:
        client.pull(ImageStore(tmp_path / "e"), ref)
    assert err.value.status == 401
    client.close()


def test_bearer_token_flow_anonymous_pull_and_authenticated_push(
        tmp_path, token_registry, registry_credentials, make_image):
    user_name, password = registry_credentials
    store = ImageStore(tmp_path / "s")
    img = make_image(store, "t:1", _two_layers())
    ref = f"{token_registry.host}/team/t:1"
    anon = RegistryClient(config_path=tmp_path / "anon.json", timeout=10)
    with pytest.raises(RegistryError) as err:
        anon.push(store, img, ref)
    assert err.value.status == 401
    with pytest.raises(RegistryError) as err:
        anon.login(token_registry.host, user_name, "wrong")
    assert err.value.status == 401
    user = RegistryClient(config_path=tmp_path / "user.json", timeout=10)
    user.login(token_registry.host, user_name, password)
    digest = user.push(store, img, ref)
    res = anon.pull(ImageStore(tmp_path / "d"), ref)
    assert res.digest == digest and res.image.id == img.id
    scopes = {s for q in token_registry.token_requests for s in q.get("scope", [])}
    assert "repository:team/t:pull" in scopes and "repository:team/t:pull,push" in scopes
    assert all(q.get("service") == ["nbc-test"] for q in token_registry.token_requests)
    anon.close()
    user.close()


def test_tampered_blob_raises_digest_mismatch_and_nothing_is_listed(tmp_path, registry, client, make_image):
    store = ImageStore(tmp_path / "s")
    img = make_image(store, "tamper:1", [{"f": os.urandom(50_000)}])
    ref = f"{registry.host}/tamper:1"
    client.push(store, img, ref)
    layer = client.manifest_inspect(ref).manifest.layers[0]
    path = registry.blob_path(layer.digest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    dst = ImageStore(tmp_path / "d")
    with pytest.raises(DigestMismatchError):
        client.pull(dst, ref)
    assert dst.images() == []
    assert not dst.content.has(img.config.diff_ids[0])
    assert not list((dst.root / "ingest").iterdir())


def test_registry_down_is_a_one_line_error_naming_it(tmp_path, client, unused_port):
    port = unused_port
    with pytest.raises(RegistryError) as err:
        client.pull(ImageStore(tmp_path / "d"), f"127.0.0.1:{port}/x:1")
    assert err.value.status == 0
    assert str(err.value) == f"cannot reach registry 127.0.0.1:{port}: connection refused"


def test_unknown_repository_or_tag_names_the_reference(tmp_path, registry, client):
    with pytest.raises(NotFoundError) as err:
        client.pull(ImageStore(tmp_path / "d"), f"{registry.host}/nope:latest")
    assert str(err.value).startswith(f"manifest for {registry.host}/nope:latest not found")
    assert err.value.status == 404 and registry.host in err.value.url


def test_broken_download_is_resumed_with_range_in_the_same_pull(
        tmp_path, registry, flaky_front, client, make_image):
    store = ImageStore(tmp_path / "s")
    img = make_image(store, "r:1", [{"f": os.urandom(400_000)}])
    client.push(store, img, f"{registry.host}/r:1")
    res = client.pull(ImageStore(tmp_path / "d"), f"{flaky_front.host}/r:1")
    assert res.image.id == img.id
    assert res.layers[0].resumed_from == 64 << 10
    ranges = [h.get("Range") for m, p, h in flaky_front.log if m == "GET" and "/blobs/" in p]
    assert f"bytes={64 << 10}-" in ranges


def test_interrupted_pull_leaves_no_image_and_the_next_pull_resumes(
        tmp_path, registry, flaky_front, make_image):
    store = ImageStore(tmp_path / "s")
    img = make_image(store, "r:1", [{"f": os.urandom(400_000)}])
    pusher = RegistryClient(config_path=tmp_path / "c.json")
    pusher.push(store, img, f"{registry.host}/r:1")
    dst = ImageStore(tmp_path / "d")
    once = RegistryClient(config_path=tmp_path / "c.json", retries=0)
    with pytest.raises(RegistryError, match="pull again to resume"):
        once.pull(dst, f"{flaky_front.host}/r:1")
    assert dst.images() == []
    partial = list((dst.root / "ingest").glob("pull-*"))
    assert len(partial) == 1 and partial[0].stat().st_size == 64 << 10
    res = once.pull(dst, f"{flaky_front.host}/r:1")
    assert res.image.id == img.id and res.layers[0].resumed_from == 64 << 10
    assert not list((dst.root / "ingest").iterdir())
    pusher.close()
    once.close()


def _upload_blob(host: str, repo: str, data: bytes) -> Descriptor:
    start = httpx.post(f"http://{host}/v2/{repo}/blobs/uploads/")
    assert start.status_code == 202, start.text
    digest = Digest.of(data)
    url = httpx.URL(start.headers["location"]).copy_merge_params({"digest": str(digest)})
    done = httpx.put(str(start.url.join(url)), content=data,
                     headers={"Content-Type": "application/octet-stream"})
    assert done.status_code == 201, done.text
    return Descriptor("", digest, len(data))


def test_pull_of_uncompressed_and_zstd_layers_stores_them_by_diff_id(tmp_path, registry, client, make_image):
    zstandard = pytest.importorskip("zstandard")
    src = ImageStore(tmp_path / "src")
    img = make_image(src, "mixed:1", _two_layers(5))
    plain, second = (src.content.read(d) for d in img.config.diff_ids)
    layers = [
        _upload_blob(registry.host, "mixed", plain),
        _upload_blob(registry.host, "mixed", zstandard.ZstdCompressor(level=3).compress(second)),
    ]
    config = src.content.read(img.id)
    cfg = _upload_blob(registry.host, "mixed", config)
    manifest = Manifest(
        Descriptor("application/vnd.oci.image.config.v1+json", cfg.digest, cfg.size),
        (Descriptor(MT_OCI_LAYER, layers[0].digest, layers[0].size),
         Descriptor("application/vnd.oci.image.layer.v1.tar+zstd", layers[1].digest, layers[1].size)),
    )
    r = httpx.put(f"http://{registry.host}/v2/mixed/manifests/1", content=manifest.to_bytes(),
                  headers={"Content-Type": MT_OCI_MANIFEST})
    assert r.status_code == 201, r.text
    dst = ImageStore(tmp_path / "dst")
    res = client.pull(dst, f"{registry.host}/mixed:1")
    assert res.image.id == img.id
    assert [dst.content.read(d) for d in img.config.diff_ids] == [plain, second]
    assert not list((dst.root / "ingest").iterdir())


def test_progress_prints_docker_lines_to_a_text_stream(tmp_path, registry, client, make_image):
    import io

    store = ImageStore(tmp_path / "s")
    img = make_image(store, "p:1", _two_layers())
    client.push(store, img, f"{registry.host}/p:1")
    out = io.StringIO()
    from nbcontainer.cli.progress import LineProgress

    with RegistryClient(config_path=tmp_path / "c.json", progress=LineProgress(out)) as c:
        c.pull(ImageStore(tmp_path / "d"), f"{registry.host}/p:1")
    lines = out.getvalue().splitlines()
    assert lines[0] == "1: Pulling from p"
    assert sum(line.endswith(": Pull complete") for line in lines) == 2
    assert lines[-1] == f"Status: Downloaded newer image for {registry.host}/p:1"


# -- through the Engine: layers are unpacked while the pull runs, the image is named last -------------


def test_engine_pull_unpacks_each_layer_before_pull_complete_and_names_the_image_last(
        tmp_path, registry, client, make_image, engine, monkeypatch):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    img = make_image(ImageStore(tmp_path / "s"), "u:1", _two_layers())
    digest = client.push(ImageStore(tmp_path / "s"), img, f"{registry.host}/u:1")
    events: list[ProgressEvent] = []
    res = engine.pull(f"{registry.host}/u:1", progress=events.append)
    assert res.digest == digest and res.image.id == img.id
    assert all(engine.snapshots.has_layer(c) for c in img.config.chain_ids)
    for lr in res.layers:
        mine = [e.status for e in events if e.id == lr.digest.short]
        assert mine.index("Download complete") < mine.index("Extracting") < mine.index("Pull complete")
        extracted = [e for e in events if e.id == lr.digest.short and e.status == "Extracting"]
        assert extracted[-1].current == extracted[-1].total == engine.store.content.size(lr.diff_id)
    statuses = [e.status for e in events]
    last_complete = max(i for i, s in enumerate(statuses) if s == "Pull complete")
    assert last_complete < statuses.index(f"Digest: {digest}")
    top = engine.snapshots.layer(img.config.chain_ids[-1]).path
    assert (Path(top) / "data/blob.bin").stat().st_size == 300_000
    assert [r.tag for r in engine.images()] == ["1"]


def test_engine_pull_of_a_layer_that_will_not_unpack_names_nothing(
        tmp_path, registry, client, make_image, engine, monkeypatch):
    from nbcontainer.errors import UnsafeArchiveError

    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    img = make_image(ImageStore(tmp_path / "s"), "evil:1", [{"ok": b"fine\n"}, {"../escape": b"x\n"}])
    client.push(ImageStore(tmp_path / "s"), img, f"{registry.host}/evil:1")
    with pytest.raises(UnsafeArchiveError):
        engine.pull(f"{registry.host}/evil:1")
    assert engine.images() == []
    assert not list(tmp_path.rglob("escape"))
