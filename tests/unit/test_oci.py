import hashlib

import pytest

from nbcontainer.errors import InvalidArgumentError
from nbcontainer.oci import (
    MT_OCI_LAYER,
    Descriptor,
    Digest,
    History,
    ImageConfig,
    Index,
    Manifest,
    Reference,
    chain_ids,
    layer_compression,
)


@pytest.mark.parametrize(
    "text, full, familiar",
    [
        ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
        ("user/app", "docker.io/user/app:latest", "user/app:latest"),
        ("localhost:5000/a/b:2", "localhost:5000/a/b:2", "localhost:5000/a/b:2"),
        ("127.0.0.1:5000/x", "127.0.0.1:5000/x:latest", "127.0.0.1:5000/x:latest"),
        ("quay.io/podman/hello", "quay.io/podman/hello:latest", "quay.io/podman/hello:latest"),
        ("index.docker.io/library/debian:bookworm", "docker.io/library/debian:bookworm", "debian:bookworm"),
    ],
)
def test_reference_is_normalised_like_docker(text, full, familiar):
    ref = Reference.parse(text)
    assert str(ref) == full
    assert ref.familiar == familiar


def test_reference_with_digest_has_no_default_tag():
    d = "sha256:" + "a" * 64
    ref = Reference.parse(f"busybox@{d}")
    assert ref.tag == "" and ref.digest == d
    assert str(ref) == f"docker.io/library/busybox@{d}"


@pytest.mark.parametrize("bad", ["", "UPPER/case", "busybox@sha256:xyz", "a:b:c", " busybox", "x:"])
def test_bad_references_are_refused(bad):
    with pytest.raises(InvalidArgumentError):
        Reference.parse(bad)


def test_chain_ids_follow_the_oci_definition():
    d1 = "sha256:" + hashlib.sha256(b"1").hexdigest()
    d2 = "sha256:" + hashlib.sha256(b"2").hexdigest()
    c = chain_ids([d1, d2])
    assert c[0] == d1
    assert c[1] == "sha256:" + hashlib.sha256(f"{d1} {d2}".encode()).hexdigest()


def test_digest_validates_and_gives_short_id():
    d = Digest.of(b"x")
    assert d.short == d.hex[:12]
    with pytest.raises(InvalidArgumentError):
        Digest("sha256:abc")


def test_manifest_and_config_round_trip_through_json():
    layer = Descriptor(MT_OCI_LAYER, Digest.of(b"l"), 1)
    cfg = ImageConfig("amd64", created="2024-01-01T00:00:00Z", config={"Cmd": ["sh"]},
                      diff_ids=(Digest.of(b"l"),),
                      history=(History(created_by="ADD x", comment="c"),
                               History(created_by="CMD", empty_layer=True)),
                      extra={"docker_version": "x"})
    again = ImageConfig.from_bytes(cfg.to_bytes())
    assert again == cfg and again.config == {"Cmd": ["sh"]} and again.extra == {"docker_version": "x"}
    config = Descriptor("application/vnd.oci.image.config.v1+json", Digest.of(cfg.to_bytes()), 10)
    m = Manifest(config, (layer,))
    assert Manifest.from_bytes(m.to_bytes()) == m
    idx = Index((Descriptor(m.media_type, Digest.of(m.to_bytes()), 5),))
    assert Index.from_bytes(idx.to_bytes()).manifests == idx.manifests


def test_invalid_json_is_a_one_line_error():
    with pytest.raises(InvalidArgumentError, match="invalid manifest JSON"):
        Manifest.from_bytes(b"{nope")


def test_layer_compression_from_media_type():
    assert layer_compression("application/vnd.oci.image.layer.v1.tar+gzip") == "gzip"
    assert layer_compression("application/vnd.docker.image.rootfs.diff.tar.gzip") == "gzip"
    assert layer_compression("application/vnd.oci.image.layer.v1.tar+zstd") == "zstd"
    assert layer_compression(MT_OCI_LAYER) == ""
    with pytest.raises(InvalidArgumentError):
        layer_compression("text/plain")


@pytest.mark.parametrize("bad", ["busy\nbox:1", "busybox:la\ttest", "a" * 256,
                                 "reg.io:5000/" + "b" * 250 + ":1"])
def test_references_with_control_characters_or_over_255_characters_are_refused(bad):
    with pytest.raises(InvalidArgumentError):
        Reference.parse(bad)
    assert Reference.parse("a" * 200 + ":" + "t" * 100).tag == "t" * 100  # the tag does not count
