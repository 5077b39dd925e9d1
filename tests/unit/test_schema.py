"""Schema checks on image configs, manifests and indexes (``nbcontainer.oci``).

The ``SPEC_*`` vectors are those of the OCI image-spec's own schema tests (``schema/config_test.go``,
``manifest_test.go``, ``imageindex_test.go``): each must-fail vector is refused, each valid one accepted.
The ``OURS_*`` vectors add the fields the spec tests leave out (Cmd, Entrypoint, rootfs, times, history,
descriptor sizes) and what older stores and other tools actually wrote (nulls, Docker's omitted fields).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from nbcontainer.errors import InvalidArgumentError
from nbcontainer.oci import MAX_HISTORY, Descriptor, ImageConfig, Index, Manifest

D1 = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
D2 = "sha256:9d3dd9504c685a304985025df4ed0283e47ac9ffa9bd0326fddf4d59513f0827"
D3 = "sha256:2b689805fbd00b2db1df73fae47562faac1a626d5f61744bfe29946ecff5d73d"
D4 = "sha256:c57089565e894899735d458f0fd4bb17a0f1e0df8d72da392b85c9b35ee777cd"
DC = "sha256:c86f7763873b6c0aae22d963bab59b4f5debbed6685761b5951584f6efb0633b"
ROOTFS = {"diff_ids": [D1], "type": "layers"}
MT_CFG = "application/vnd.oci.image.config.v1+json"
MT_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_MAN = "application/vnd.oci.image.manifest.v1+json"

# -- image-spec schema/config_test.go ------------------------------------------------------------

SPEC_CONFIG_FAIL: dict[str, Any] = {
    "os numeric": {"architecture": "amd64", "os": 123, "rootfs": ROOTFS},
    "config.User numeric": {
        "created": "2015-10-31T22:22:56.015925234Z", "author": "Alyssa P. Hacker <alyspdev@example.com>",
        "architecture": "amd64", "os": "linux", "config": {"User": 1234}, "rootfs": ROOTFS,
    },
    "history a string": {"history": "should be an array", "architecture": "amd64", "os": 123,
                         "rootfs": ROOTFS},
    "Env numeric item": {"architecture": "amd64", "os": 123, "config": {"Env": [7353]}, "rootfs": ROOTFS},
    "Volumes a list": {
        "architecture": "amd64", "os": 123,
        "config": {"Volumes": ["/var/job-result-data", "/var/log/my-app-logs"]}, "rootfs": ROOTFS,
    },
    "invalid JSON": "invalid JSON",
}

SPEC_CONFIG_FULL: dict[str, Any] = {
    "created": "2015-10-31T22:22:56.015925234Z",
    "author": "Alyssa P. Hacker <alyspdev@example.com>",
    "architecture": "amd64",
    "os": "linux",
    "config": {
        "User": "1:1",
        "ExposedPorts": {"8080/tcp": {}},
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "FOO=docker_is_a_really", "BAR=great_tool_you_know"],
        "Entrypoint": ["/bin/sh"],
        "Cmd": ["--foreground", "--config", "/etc/my-app.d/default.cfg"],
        "Volumes": {"/var/job-result-data": {}, "/var/log/my-app-logs": {}},
        "WorkingDir": "/home/alice",
        "Labels": {"com.example.project.git.url": "https://example.com/project.git",
                   "com.example.project.git.commit": "45a939b2999782a3f005621a8d0f29aa387e1d6b"},
    },
    "rootfs": {"diff_ids": [D2, D3], "type": "layers"},
    "history": [
        {"created": "2015-10-31T22:22:54.690851953Z",
         "created_by": "/bin/sh -c #(nop) ADD "
                       "file:a3bc1e842b69636f9df5256c49c5374fb4eef1e281fe3f282c65fb853ee171c5 in /"},
        {"created": "2015-10-31T22:22:55.613815829Z", "created_by": '/bin/sh -c #(nop) CMD ["sh"]',
         "empty_layer": True},
    ],
}

SPEC_CONFIG_VALID: dict[str, Any] = {
    "optional fields": SPEC_CONFIG_FULL,
    "required fields only": {"architecture": "amd64", "os": "linux", "rootfs": ROOTFS},
}


def _with(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """``base`` with ``path`` (dots into objects; a key with a dot in it is not split) set or deleted."""
    out = copy.deepcopy(base)
    parts = path.split(".", 1) if path.split(".", 1)[0] in ("config", "rootfs") else [path]
    obj = out
    for p in parts[:-1]:
        obj = obj[p]
    if value is _DELETE:
        del obj[parts[-1]]
    else:
        obj[parts[-1]] = value
    return out


_DELETE = object()

OURS_CONFIG_FAIL: dict[str, tuple[dict[str, Any], str]] = {
    "architecture numeric": (_with(SPEC_CONFIG_FULL, "architecture", 64), "'architecture'"),
    "architecture missing": (_with(SPEC_CONFIG_FULL, "architecture", _DELETE), "'architecture'"),
    "os missing": (_with(SPEC_CONFIG_FULL, "os", _DELETE), "'os'"),
    "created a float (1e20)": (_with(SPEC_CONFIG_FULL, "created", 1e20),
                               "'created' must be an RFC 3339 time"),
    "created not RFC 3339": (_with(SPEC_CONFIG_FULL, "created", "yesterday"), "'created'"),
    "created year 0": (_with(SPEC_CONFIG_FULL, "created", "0000-01-01T00:00:00Z"), "'created'"),
    "created month 13": (_with(SPEC_CONFIG_FULL, "created", "2015-13-31T22:22:56Z"), "'created'"),
    "created no zone": (_with(SPEC_CONFIG_FULL, "created", "2015-10-31T22:22:56"), "'created'"),
    "author numeric": (_with(SPEC_CONFIG_FULL, "author", 7), "'author'"),
    "config a list": (_with(SPEC_CONFIG_FULL, "config", ["sh"]), "'config' must be an object"),
    "Env a string": (_with(SPEC_CONFIG_FULL, "config.Env", "FOO=1"),
                     "image config: 'config.Env' must be a list of strings"),
    "Cmd a string": (_with(SPEC_CONFIG_FULL, "config.Cmd", "sh"), "'config.Cmd' must be a list of strings"),
    "Entrypoint a string": (_with(SPEC_CONFIG_FULL, "config.Entrypoint", "/bin/sh"), "'config.Entrypoint'"),
    "Entrypoint with a number": (_with(SPEC_CONFIG_FULL, "config.Entrypoint", ["/bin/sh", 1]),
                                 "'config.Entrypoint'"),
    "ExposedPorts a list": (_with(SPEC_CONFIG_FULL, "config.ExposedPorts", ["80/tcp"]),
                            "'config.ExposedPorts'"),
    "Labels a list": (_with(SPEC_CONFIG_FULL, "config.Labels", ["a=b"]), "'config.Labels'"),
    "Labels value numeric": (_with(SPEC_CONFIG_FULL, "config.Labels", {"a": 1}), "'config.Labels'"),
    "WorkingDir numeric": (_with(SPEC_CONFIG_FULL, "config.WorkingDir", 1234), "'config.WorkingDir'"),
    "StopSignal numeric": (_with(SPEC_CONFIG_FULL, "config.StopSignal", 15), "'config.StopSignal'"),
    "Healthcheck.Test a string": (_with(SPEC_CONFIG_FULL, "config.Healthcheck", {"Test": "true"}),
                                  "'config.Healthcheck.Test'"),
    "rootfs missing": (_with(SPEC_CONFIG_FULL, "rootfs", _DELETE), "'rootfs'"),
    "rootfs a list": (_with(SPEC_CONFIG_FULL, "rootfs", [D1]), "'rootfs'"),
    "rootfs.type not layers": (_with(SPEC_CONFIG_FULL, "rootfs.type", "tar"),
                               "'rootfs.type' must be \"layers\""),
    "rootfs.type numeric": (_with(SPEC_CONFIG_FULL, "rootfs.type", 1), "'rootfs.type'"),
    "diff_ids a string": (_with(SPEC_CONFIG_FULL, "rootfs.diff_ids", D1), "'rootfs.diff_ids'"),
    "diff_id malformed": (_with(SPEC_CONFIG_FULL, "rootfs.diff_ids", [D1, "sha256:abc"]),
                          "'rootfs.diff_ids[1]'"),
    "diff_id upper-case hex": (_with(SPEC_CONFIG_FULL, "rootfs.diff_ids", [D1.upper()]),
                               "'rootfs.diff_ids[0]'"),
    "history row a string": (_with(SPEC_CONFIG_FULL, "history", ["ADD"]), "'history[0]'"),
    "history created_by numeric": (_with(SPEC_CONFIG_FULL, "history", [{"created_by": 3}]),
                                   "'history[0].created_by'"),
    "history empty_layer a string": (_with(SPEC_CONFIG_FULL, "history", [{"empty_layer": "false"}]),
                                     "'history[0].empty_layer'"),
    "history created a number": (_with(SPEC_CONFIG_FULL, "history", [{}, {"created": 1e20}]),
                                 "'history[1].created'"),
    "history too long": (_with(SPEC_CONFIG_FULL, "history", [{}] * (MAX_HISTORY + 1)),
                         "'history' must have at most"),
}

OURS_CONFIG_VALID: dict[str, dict[str, Any]] = {
    # Docker writes nulls for unset slices and maps, and omits an empty diff_ids list
    "Docker nulls": _with(SPEC_CONFIG_FULL, "config", {
        "Cmd": None, "Entrypoint": None, "Env": None, "Volumes": None, "ExposedPorts": None, "Labels": None,
        "OnBuild": None, "User": "", "Healthcheck": {"Test": ["CMD", "true"], "Interval": 30000000000},
        "ArgsEscaped": True, "Shell": ["/bin/sh", "-c"],
    }),
    "config null": _with(SPEC_CONFIG_FULL, "config", None),
    "no diff_ids (Docker omitempty)": _with(SPEC_CONFIG_FULL, "rootfs", {"type": "layers"}),
    "created empty": _with(SPEC_CONFIG_FULL, "created", ""),
    "created with offset": _with(SPEC_CONFIG_FULL, "created", "2015-10-31T22:22:56+02:00"),
    "created Go zero time": _with(SPEC_CONFIG_FULL, "created", "0001-01-01T00:00:00Z"),
    "created leap second": _with(SPEC_CONFIG_FULL, "created", "2016-12-31T23:59:60Z"),
    "history at the bound": _with(SPEC_CONFIG_FULL, "history", [{"empty_layer": True}] * MAX_HISTORY),
    "unknown top-level keys kept": _with(SPEC_CONFIG_FULL, "container", "abc"),
}


def _bytes(v: Any) -> bytes:
    return v.encode() if isinstance(v, str) else json.dumps(v).encode()


@pytest.mark.parametrize("doc", SPEC_CONFIG_FAIL.values(), ids=SPEC_CONFIG_FAIL.keys())
def test_spec_config_must_fail_vectors_are_refused(doc):
    with pytest.raises(InvalidArgumentError):
        ImageConfig.from_bytes(_bytes(doc))


@pytest.mark.parametrize("doc", SPEC_CONFIG_VALID.values(), ids=SPEC_CONFIG_VALID.keys())
def test_spec_config_valid_vectors_are_accepted(doc):
    cfg = ImageConfig.from_bytes(_bytes(doc))
    assert cfg.architecture == "amd64" and cfg.os == "linux"


@pytest.mark.parametrize(("doc", "message"), OURS_CONFIG_FAIL.values(), ids=OURS_CONFIG_FAIL.keys())
def test_bad_config_is_refused_with_one_line_naming_the_field(doc, message):
    with pytest.raises(InvalidArgumentError) as err:
        ImageConfig.from_bytes(_bytes(doc))
    text = str(err.value)
    assert text.startswith("image config: ") and message in text and "\n" not in text


@pytest.mark.parametrize("doc", OURS_CONFIG_VALID.values(), ids=OURS_CONFIG_VALID.keys())
def test_config_as_docker_writes_it_is_accepted(doc):
    cfg = ImageConfig.from_bytes(_bytes(doc))
    assert ImageConfig.from_bytes(cfg.to_bytes()) == cfg


# -- image-spec schema/manifest_test.go ------------------------------------------------------------

SPEC_MANIFEST_FULL: dict[str, Any] = {
    "schemaVersion": 2,
    "mediaType": MT_MAN,
    "config": {"mediaType": MT_CFG, "size": 1470, "digest": DC},
    "layers": [
        {"mediaType": MT_GZ, "size": 675598, "digest": D2},
        {"mediaType": MT_GZ, "size": 156, "digest": D3},
        {"mediaType": MT_GZ, "size": 148, "digest": D4},
    ],
    "annotations": {"key1": "value1", "key2": "value2"},
}


def _m(**over: Any) -> dict[str, Any]:
    out = copy.deepcopy(SPEC_MANIFEST_FULL)
    del out["annotations"]
    for k, v in over.items():
        if v is _DELETE:
            del out[k]
        else:
            out[k] = v
    return out


SPEC_MANIFEST_FAIL: dict[str, Any] = {
    "mediaType does not match pattern": _m(mediaType="invalid", layers=[{"mediaType": MT_GZ, "size": 148,
                                                                        "digest": D4}]),
    "config.size a string": _m(config={"mediaType": MT_CFG, "size": "1470", "digest": DC}),
    "layers.size a string": _m(layers=[{"mediaType": MT_GZ, "size": "675598", "digest": DC}]),
    "unrecognised layer type and size a string (strict)": _m(
        layers=[{"mediaType": "application/vnd.other.layer", "size": "675598", "digest": DC}]),
    "unrecognised layer type and size a string (not strict)": _m(
        layers=[{"mediaType": "application/vnd.other.layer", "size": "675598", "digest": DC}]),
    "config.digest not hex": _m(
        config={"mediaType": MT_CFG, "size": 1470,
                "digest": "sha256:c86f7763873b6c0aaehhhhhhhhhhhhhhhhmmmmmmmmmmmmmmmm22d9h3bab59b4f"},
        layers=[]),
}

SPEC_MANIFEST_VALID: dict[str, Any] = {
    "optional fields": SPEC_MANIFEST_FULL,
    "required fields only": _m(),
}

OURS_MANIFEST_FAIL: dict[str, tuple[dict[str, Any], str]] = {
    "config missing": (_m(config=_DELETE), "with a config"),
    "schemaVersion a string": (_m(schemaVersion="2"), "schemaVersion"),
    "mediaType numeric": (_m(mediaType=2), "'mediaType'"),
    "config.mediaType numeric": (_m(config={"mediaType": 1234, "size": 1, "digest": DC}),
                                 "'config.mediaType'"),
    "config.mediaType missing": (_m(config={"size": 1, "digest": DC}), "'config.mediaType'"),
    "config.size negative": (_m(config={"mediaType": MT_CFG, "size": -1, "digest": DC}),
                             "'config.size' must be a non-negative integer"),
    "config.size a float": (_m(config={"mediaType": MT_CFG, "size": 1.5, "digest": DC}), "'config.size'"),
    "config.size a boolean": (_m(config={"mediaType": MT_CFG, "size": True, "digest": DC}), "'config.size'"),
    "config.size 2**63": (_m(config={"mediaType": MT_CFG, "size": 2**63, "digest": DC}), "'config.size'"),
    "config.digest sha512": (_m(config={"mediaType": MT_CFG, "size": 1, "digest": "sha512:" + "a" * 128}),
                             "'config.digest'"),
    "config.digest numeric": (_m(config={"mediaType": MT_CFG, "size": 1, "digest": 5}), "'config.digest'"),
    "layers an object": (_m(layers={}), "'layers' must be a list"),
    "layer a string": (_m(layers=[D2]), "'layers[0]'"),
    "layer digest malformed": (_m(layers=[{"mediaType": MT_GZ, "size": 1, "digest": "sha256:xyz"}]),
                               "'layers[0].digest'"),
    "layer urls a string": (_m(layers=[{"mediaType": MT_GZ, "size": 1, "digest": D2, "urls": "http://x"}]),
                            "'layers[0].urls'"),
    "annotations value numeric": (_m(annotations={"a": 1}), "'annotations'"),
}


@pytest.mark.parametrize("doc", SPEC_MANIFEST_FAIL.values(), ids=SPEC_MANIFEST_FAIL.keys())
def test_spec_manifest_must_fail_vectors_are_refused(doc):
    with pytest.raises(InvalidArgumentError):
        Manifest.from_bytes(_bytes(doc))


@pytest.mark.parametrize("doc", SPEC_MANIFEST_VALID.values(), ids=SPEC_MANIFEST_VALID.keys())
def test_spec_manifest_valid_vectors_are_accepted(doc):
    m = Manifest.from_bytes(_bytes(doc))
    assert m.config.size == 1470 and len(m.layers) == 3


def test_manifest_without_layers_is_accepted():
    # the spec's older schema test refuses an empty "layers"; image-spec 1.1 allows it (artifacts), and
    # Docker makes zero-layer images (FROM scratch + metadata), so we accept it on purpose
    assert Manifest.from_bytes(_bytes(_m(layers=[]))).layers == ()


@pytest.mark.parametrize(("doc", "message"), OURS_MANIFEST_FAIL.values(), ids=OURS_MANIFEST_FAIL.keys())
def test_bad_manifest_is_refused_with_one_line_naming_the_field(doc, message):
    with pytest.raises(InvalidArgumentError) as err:
        Manifest.from_bytes(_bytes(doc))
    text = str(err.value)
    assert message in text and "\n" not in text


# -- image-spec schema/imageindex_test.go ----------------------------------------------------------

_PPC = {"mediaType": MT_MAN, "size": 7143,
        "digest": "sha256:e692418e4cbaf90ca69d05a66403747baa33ee08806650b51fab815ad7fc331f",
        "platform": {"architecture": "ppc64le", "os": "linux"}}
_AMD = {"mediaType": MT_MAN, "size": 7682,
        "digest": "sha256:5b0bcabd1ed22e9fb1310cf6c2dec7cdef19f0ad69efa1f392e94a4333501270",
        "platform": {"architecture": "amd64", "os": "linux", "features": ["sse4"]}}


def _i(*manifests: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"schemaVersion": 2, "manifests": [copy.deepcopy(m) for m in manifests], **extra}


SPEC_INDEX_FAIL: dict[str, Any] = {
    "mediaType does not match pattern": _i({**_PPC, "mediaType": "invalid"}),
    "manifest.size a string": _i({**_AMD, "size": "7682"}),
    "manifest.digest missing": _i({k: v for k, v in _AMD.items() if k != "digest"}),
    "invalid referenced manifest media type": _i({**_AMD, "mediaType": "invalid"}),
    "empty referenced manifest media type": _i({**_AMD, "mediaType": ""}),
}

SPEC_INDEX_VALID: dict[str, Any] = {
    "platform optional": _i({k: v for k, v in _AMD.items() if k != "platform"}),
    "optional fields": _i(_PPC, _AMD,
                          annotations={"com.example.key1": "value1", "com.example.key2": "value2"}),
    "required fields only": _i(_PPC),
    "customised manifest media type": _i({**_PPC, "mediaType": "application/customized.manifest+json"}),
}

OURS_INDEX_FAIL: dict[str, tuple[dict[str, Any], str]] = {
    "manifests an object": (_i(), "'manifests'"),
    "platform.os numeric": (_i({**_PPC, "platform": {"architecture": "amd64", "os": 1}}),
                            "'manifests[0].platform.os'"),
    "platform a string": (_i({**_PPC, "platform": "linux/amd64"}), "'manifests[0].platform'"),
    "size negative": (_i(_PPC, {**_AMD, "size": -5}), "'manifests[1].size'"),
}
OURS_INDEX_FAIL["manifests an object"][0]["manifests"] = {}


@pytest.mark.parametrize("doc", SPEC_INDEX_FAIL.values(), ids=SPEC_INDEX_FAIL.keys())
def test_spec_index_must_fail_vectors_are_refused(doc):
    with pytest.raises(InvalidArgumentError):
        Index.from_bytes(_bytes(doc))


@pytest.mark.parametrize("doc", SPEC_INDEX_VALID.values(), ids=SPEC_INDEX_VALID.keys())
def test_spec_index_valid_vectors_are_accepted(doc):
    assert Index.from_bytes(_bytes(doc)).manifests


@pytest.mark.parametrize(("doc", "message"), OURS_INDEX_FAIL.values(), ids=OURS_INDEX_FAIL.keys())
def test_bad_index_is_refused_with_one_line_naming_the_field(doc, message):
    with pytest.raises(InvalidArgumentError) as err:
        Index.from_bytes(_bytes(doc))
    assert str(err.value).startswith("image index: ") and message in str(err.value)


def test_a_lone_descriptor_is_checked_too():
    with pytest.raises(InvalidArgumentError, match="'size' must be a non-negative integer"):
        Descriptor.from_json({"mediaType": MT_GZ, "size": "1", "digest": D1})


# -- where the checks apply: archive load ----------------------------------------------------------


def _docker_archive(path, config: dict[str, Any]) -> None:
    import hashlib
    import io
    import tarfile

    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tf:
        ti = tarfile.TarInfo("a")
        ti.size = 1
        tf.addfile(ti, io.BytesIO(b"a"))
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = {**config, "rootfs": {"type": "layers", "diff_ids": [diff_id]}}
    cfg = json.dumps(config).encode()
    cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
    members = {cfg_name: cfg, "l/layer.tar": layer_bytes,
               "manifest.json": json.dumps([{"Config": cfg_name, "RepoTags": ["bad:1"],
                                             "Layers": ["l/layer.tar"]}]).encode()}
    with tarfile.open(path, "w") as tf:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))


def test_archive_load_refuses_an_invalid_config_with_the_archive_and_field_named(tmp_path):
    from nbcontainer.store import ImageStore
    from nbcontainer.transfer.archive.load import load

    store = ImageStore(tmp_path / "store")
    good = tmp_path / "good.tar"
    _docker_archive(good, {"architecture": "amd64", "os": "linux", "created": "2025-01-01T00:00:00Z"})
    assert [x.names for x in load(store, good)] == [["docker.io/library/bad:1"]]
    bad = tmp_path / "bad.tar"
    _docker_archive(bad, {"architecture": "amd64", "os": "linux", "created": 1e20})
    with pytest.raises(InvalidArgumentError) as err:
        load(ImageStore(tmp_path / "other"), bad)
    assert str(err.value) == f"{bad}: image config: 'created' must be an RFC 3339 time"
