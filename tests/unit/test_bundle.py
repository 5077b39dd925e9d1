"""The container config and the runner's messages as dataclasses: JSON round trips, configs written
before the run options were fields, and the error mapping of the wire format."""

from __future__ import annotations

import json

import pytest

from nbcontainer.errors import (
    DigestMismatchError,
    NbContainerError,
    NotFoundError,
    RuntimeSetupError,
    UnsupportedHostError,
)
from nbcontainer.runtime import protocol
from nbcontainer.runtime.bundle import Bundle, ContainerSpec, Device, Volume
from nbcontainer.snapshot import Mount

CID = "ab" * 32
OVERLAY = Mount("overlay", "overlay", ("lowerdir=l/A:l/B", "upperdir=x/diff", "workdir=x/work"),
                "/store/overlay")


def through_json(obj: dict) -> dict:
    return json.loads(json.dumps(obj))


def full_spec() -> ContainerSpec:
    return ContainerSpec(
        id=CID, name="web", rootfs=OVERLAY, merged="/store/overlay/x/merged", args=["httpd", "-f"],
        env=["PATH=/bin"], cwd="/srv", user="nobody:nogroup", hostname="box", readonly_rootfs=True,
        mounts=[Volume("/host/data", "/data", readonly=True), Volume("/host/logs", "/logs")],
        cap_add=["NET_ADMIN"], cap_drop=["CAP_CHOWN"], memory=64 << 20, pids_limit=20, cpus=0.5,
        network="bridge", tty=True,
        devices=[Device("/dev/loop-control", "/dev/lc", "c", 10, 237, 0o660, 0, 6, "rw")],
        seccomp="unconfined", no_new_privileges=True,
        annotations={"image": "busybox", "image_id": "sha256:1"},
        publish=["127.0.0.1:8080:80", "53/udp"], tty_size=(24, 80), attach=True, auto_remove=True,
    )


def test_volume_and_device_round_trip_through_json():
    vol = Volume("/a", "/b", readonly=True)
    dev = Device("/dev/fuse", "/dev/fuse", "c", 10, 229, 0o666, 0, 0, "rwm")
    assert Volume.from_json(through_json(vol.to_json())) == vol
    assert Device.from_json(through_json(dev.to_json())) == dev
    assert Volume.from_json({"source": "/a", "destination": "/b"}).readonly is False


def test_spec_round_trips_through_json_with_typed_options():
    spec = full_spec()
    back = ContainerSpec.from_json(through_json(spec.to_json()))
    assert back == spec
    assert back.tty_size == (24, 80)
    assert isinstance(back.mounts[0], Volume) and isinstance(back.devices[0], Device)
    assert back.rootfs == OVERLAY


def test_stdin_is_not_part_of_the_config():
    spec = full_spec()
    spec.stdin = b"secret"
    assert "stdin" not in spec.to_json()
    assert ContainerSpec.from_json(spec.to_json()).stdin is None


def test_run_options_are_fields_not_annotations():
    cfg = full_spec().to_json()
    assert cfg["annotations"] == {"image": "busybox", "image_id": "sha256:1"}
    assert (cfg["publish"], cfg["tty_size"], cfg["attach"], cfg["auto_remove"]) == (
        ["127.0.0.1:8080:80", "53/udp"], [24, 80], True, True)


def test_bundle_round_trips_through_json_as_one_flat_config():
    b = Bundle(full_spec(), f"/store/containers/{CID}", "2024-01-02T03:04:05.000000006Z",
               {"memory": f"/sys/fs/cgroup/memory/nbcontainer/{CID}",
                "pids": f"/sys/fs/cgroup/pids/nbcontainer/{CID}"},
               cgroupns="host", netns_path="/proc/42/ns/net")
    cfg = through_json(b.to_json())
    # what readers without imports (the engine's image bookkeeping) look up
    assert (cfg["id"], cfg["bundle"], cfg["annotations"]["image"]) == (CID, b.path, "busybox")
    assert Bundle.from_json(cfg) == b
    assert b.root == "/store"
    assert b.cgroup_procs == [f"/sys/fs/cgroup/memory/nbcontainer/{CID}/cgroup.procs",
                              f"/sys/fs/cgroup/pids/nbcontainer/{CID}/cgroup.procs"]


def old_config() -> dict:
    """A config.json as the runner wrote it before the run options were fields."""
    return {
        "id": CID, "name": "old", "rootfs": OVERLAY.to_json(), "merged": "/store/overlay/x/merged",
        "args": ["sh"], "env": [], "cwd": "/", "user": "", "hostname": CID[:12],
        "mounts": [{"source": "/host/data", "destination": "/data", "readonly": True}],
        "readonly_rootfs": False, "cap_add": [], "cap_drop": [], "memory": 0, "pids_limit": 0, "cpus": 0.0,
        "network": "bridge", "tty": True,
        "devices": [{"host": "/dev/fuse", "path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
                     "mode": 0o666, "uid": 0, "gid": 0, "access": "rwm"}],
        "seccomp": "default", "no_new_privileges": False,
        "annotations": {"image": "busybox", "image_id": "sha256:1", "chain_id": "sha256:2",
                        "snapshot_key": CID, "created_by": "sh", "command": "sh",
                        "publish": json.dumps(["8080:80"]),
                        "tty_size": "40 120", "attach": "1", "auto_remove": "1"},
        "bundle": f"/store/containers/{CID}", "created": "2024-01-02T03:04:05.000000006Z",
        "cgroups": {"unified": f"/sys/fs/cgroup/nbcontainer/{CID}"},
        "cgroup_procs": [f"/sys/fs/cgroup/nbcontainer/{CID}/cgroup.procs"], "cgroupns": "private",
    }


def test_old_config_maps_annotation_options_to_fields():
    b = Bundle.from_json(old_config())
    spec = b.spec
    assert (spec.publish, spec.tty_size, spec.attach, spec.auto_remove) == (
        ["8080:80"], (40, 120), True, True)
    assert spec.annotations == {"image": "busybox", "image_id": "sha256:1", "chain_id": "sha256:2",
                                "snapshot_key": CID, "created_by": "sh", "command": "sh"}
    assert spec.mounts == [Volume("/host/data", "/data", readonly=True)]
    assert spec.devices == [Device("/dev/fuse", "/dev/fuse", "c", 10, 229, 0o666)]
    assert (b.cgroupns, b.netns_path) == ("private", "")
    assert b.cgroup_procs == old_config()["cgroup_procs"]


def test_old_config_without_run_options_gets_the_defaults():
    cfg = old_config()
    for key in ("publish", "tty_size", "attach", "auto_remove"):
        del cfg["annotations"][key]
    del cfg["devices"], cfg["seccomp"], cfg["no_new_privileges"]
    spec = Bundle.from_json(cfg).spec
    assert (spec.publish, spec.tty_size, spec.attach, spec.auto_remove) == ([], None, False, False)
    assert (spec.devices, spec.seccomp, spec.no_new_privileges) == ([], "default", False)


def test_an_old_container_still_lists_with_its_options(tmp_path):
    from nbcontainer.runtime import Runtime

    cdir = tmp_path / "containers" / CID
    cdir.mkdir(parents=True)
    cfg = old_config()
    cfg["bundle"] = str(cdir)
    (cdir / "config.json").write_text(json.dumps(cfg))
    (cdir / "state.json").write_text(json.dumps({
        "id": CID, "status": "exited", "pid": 0, "exit_code": 3, "oom_killed": False,
        "started_at": "2024-01-02T03:04:06Z", "finished_at": "2024-01-02T03:04:07Z"}))
    [st] = Runtime(tmp_path).list()
    assert (st.name, st.status, st.exit_code, st.created) == ("old", "exited", 3, cfg["created"])
    assert st.spec.auto_remove and st.spec.publish == ["8080:80"]


# -- the runner's wire format ------------------------------------------------------------------


@pytest.mark.parametrize("req", [
    protocol.Ping(),
    protocol.Create(full_spec(), b"\x00stdin\xff"),
    protocol.Create(full_spec()),
    protocol.Exec(CID, ["sh", "-c", "echo"], ["A=1"], "/tmp", "nobody", tty=True, detach=False, stdin=b"in"),
    protocol.Exec(CID, ["true"]),
    protocol.Delete(CID, force=True),
], ids=lambda r: type(r).__name__)
def test_requests_round_trip_as_one_json_line(req):
    line = protocol.encode(req)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line)["op"] == req.op
    assert protocol.decode_request(line) == req


@pytest.mark.parametrize("req, reply", [
    (protocol.Ping(), protocol.Pong(4242)),
    (protocol.Create(full_spec()), protocol.Created({"status": "created", "pid": 7})),
    (protocol.Exec(CID, ["cat"]), protocol.Finished(0, 9, b"out\xff", b"err")),
    (protocol.Delete(CID), protocol.Done()),
], ids=lambda x: type(x).__name__)
def test_replies_round_trip_as_one_json_line(req, reply):
    line = protocol.encode(reply)
    assert json.loads(line)["ok"] is True
    assert protocol.decode_reply(line, req) == reply


def test_setup_errors_keep_step_errno_and_detail_across_the_wire():
    line = protocol.encode(RuntimeSetupError("user", 2, "unable to find user nobody2"))
    assert json.loads(line) == {"error": "RuntimeSetupError", "step": "user", "errno": 2,
                                "detail": "unable to find user nobody2",
                                "message": str(RuntimeSetupError("user", 2, "unable to find user nobody2"))}
    with pytest.raises(RuntimeSetupError) as info:
        protocol.decode_reply(line, protocol.Create(full_spec()))
    assert (info.value.step, info.value.errno) == ("user", 2)
    assert info.value.detail == "unable to find user nobody2"


@pytest.mark.parametrize("err", [
    NotFoundError("container 'x' not found"),
    UnsupportedHostError("no overlay", fix="modprobe overlay"),
    DigestMismatchError("layer", "sha256:a", "sha256:b"),
    NbContainerError("runner: KeyError: 'id'"),
], ids=lambda e: type(e).__name__)
def test_errors_come_back_as_the_same_class_and_message(err):
    with pytest.raises(type(err)) as info:
        protocol.decode_reply(protocol.encode(err), protocol.Ping())
    assert type(info.value) is type(err) and str(info.value) == str(err)


def test_an_error_name_that_is_not_ours_becomes_the_base_error():
    line = json.dumps({"error": "json", "message": "odd"}).encode()
    with pytest.raises(NbContainerError, match="odd") as info:
        protocol.decode_reply(line, protocol.Ping())
    assert type(info.value) is NbContainerError


def test_no_answer_and_unknown_operations():
    with pytest.raises(RuntimeSetupError, match="no answer to 'delete'"):
        protocol.decode_reply(b"", protocol.Delete(CID))
    with pytest.raises(NbContainerError, match="unknown operation 'fly'"):
        protocol.decode_request(b'{"op": "fly"}\n')
