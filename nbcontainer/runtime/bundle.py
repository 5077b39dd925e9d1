"""What the engine asks for (:class:`ContainerSpec`), what the runner makes of it (:class:`Bundle`), and
what the engine gets back (:class:`ContainerState`, :class:`RunResult`).

A container's config crosses three processes (client -> runner -> shim -> PID 1) and lives on disk in
``containers/<id>/config.json``; these dataclasses are that config, typed::

    ContainerSpec   the caller's request: command, rootfs, limits, volumes, devices, network and the
                    run options (publish, tty_size, attach, auto_remove); annotations are the
                    engine's own metadata (image, image_id, chain_id, snapshot_key, created_by, command)
    Bundle          spec + what the runner adds when it creates the container: its directory, the
                    creation time, its cgroups and cgroup namespace, the netns to join

``config.json`` is :meth:`Bundle.to_json`: the spec's keys and the runner's side by side in one flat
object, so a reader that only wants ``id`` or ``annotations`` needs no import. Configs written before
the run options were fields carried them in ``annotations`` (``publish`` as a JSON list, ``tty_size`` as
``"rows cols"``, ``attach``/``auto_remove`` as ``"1"``); :meth:`ContainerSpec.from_json` still reads them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from typing import Any

from nbcontainer.runtime import cgroups
from nbcontainer.snapshot.overlay import Mount

# Run options that configs written before they were fields kept in ``annotations``.
_LEGACY_ANNOTATIONS = ("publish", "tty_size", "attach", "auto_remove")


@dataclass(frozen=True)
class Volume:
    """A host path bind-mounted into the container (``-v SOURCE:DESTINATION[:ro]``)."""

    source: str
    destination: str
    readonly: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "destination": self.destination, "readonly": self.readonly}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Volume:
        return cls(d["source"], d["destination"], bool(d.get("readonly", False)))


@dataclass(frozen=True)
class Device:
    """A ``--device`` node: made at ``path`` in the container's /dev with the host node's numbers,
    ``mode`` and owner, and allowed by the device cgroup with ``access`` (``r``, ``w``, ``m``)."""

    host: str
    path: str
    type: str  # "c" | "b"
    major: int
    minor: int
    mode: int
    uid: int = 0
    gid: int = 0
    access: str = "rwm"

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Device:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class ContainerSpec:
    """A container to create; serialised (without ``stdin``) into ``containers/<id>/config.json``.

    ``rootfs`` is the snapshot's :class:`~nbcontainer.snapshot.Mount` and ``merged`` its target.
    ``args`` is the full argv (entrypoint + cmd). ``user`` is ``uid[:gid]`` or a name looked up in
    the image's /etc/passwd and /etc/group. ``mounts`` are the volumes.
    ``cap_add``/``cap_drop`` take Docker's names, with or without ``CAP_``, or ``ALL``.
    ``network`` is ``"none"``, ``"host"``, ``"container:<id>"`` or a network name (``"bridge"``);
    ``publish`` are ``-p [IP:]HOST:CTR[/PROTO]`` specs for a bridge network. ``stdin`` is fed to the
    process, then closed. ``attach`` (with ``tty``) serves the pty on ``attach.sock`` for ``run -it``,
    sized ``tty_size`` = (rows, cols) before the process starts. ``auto_remove`` marks a ``run -d --rm``
    container, removed once seen exited. ``seccomp`` is ``"default"`` (Docker's profile),
    ``"unconfined"`` or a profile's JSON text; ``no_new_privileges`` sets the flag (Docker's
    default: off). ``annotations`` are the engine's metadata; the runtime does not read them.
    """

    id: str
    name: str
    rootfs: Mount
    merged: str
    args: list[str]
    env: list[str] = field(default_factory=list)
    cwd: str = "/"
    user: str = ""
    hostname: str = ""
    mounts: list[Volume] = field(default_factory=list)
    readonly_rootfs: bool = False
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    memory: int = 0
    pids_limit: int = 0
    cpus: float = 0.0
    network: str = "none"
    stdin: bytes | None = None
    tty: bool = False
    devices: list[Device] = field(default_factory=list)
    seccomp: str = "default"
    no_new_privileges: bool = False
    annotations: dict[str, str] = field(default_factory=dict)
    publish: list[str] = field(default_factory=list)
    tty_size: tuple[int, int] | None = None
    attach: bool = False
    auto_remove: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "stdin"}
        out["rootfs"] = self.rootfs.to_json()
        for key in ("args", "env", "cap_add", "cap_drop", "publish"):
            out[key] = list(out[key])
        out["tty_size"] = list(self.tty_size) if self.tty_size else None
        out["mounts"] = [m.to_json() for m in self.mounts]
        out["devices"] = [d.to_json() for d in self.devices]
        out["annotations"] = dict(self.annotations)
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ContainerSpec:
        """The spec in ``d``; keys that are not fields (the runner's, unknown ones) are ignored."""
        plain = {f.name for f in fields(cls)} - {"rootfs", "stdin", "mounts", "devices", "tty_size",
                                                 "annotations"}
        kw: dict[str, Any] = {k: v for k, v in d.items() if k in plain}
        annotations = dict(d.get("annotations") or {})
        legacy = {k: annotations.pop(k) for k in _LEGACY_ANNOTATIONS if k in annotations}
        if "publish" not in d and legacy.get("publish"):
            kw["publish"] = list(json.loads(legacy["publish"]))
        if "attach" not in d:
            kw["attach"] = legacy.get("attach") == "1"
        if "auto_remove" not in d:
            kw["auto_remove"] = legacy.get("auto_remove") == "1"
        size = d["tty_size"] if "tty_size" in d else _legacy_tty_size(legacy.get("tty_size", ""))
        return cls(
            rootfs=Mount.from_json(d["rootfs"]),
            mounts=[Volume.from_json(m) for m in d.get("mounts") or []],
            devices=[Device.from_json(x) for x in d.get("devices") or []],
            tty_size=(int(size[0]), int(size[1])) if size else None,
            annotations=annotations,
            **kw,
        )


def _legacy_tty_size(text: str) -> tuple[int, int] | None:
    try:
        rows, cols = (int(x) for x in text.split())
    except ValueError:
        return None
    return rows, cols


@dataclass(frozen=True)
class Bundle:
    """A created container as the runner, its shim and its PID 1 see it (``config.json``).

    ``path`` is ``root/containers/<id>``; ``cgroups`` maps each controller (``unified`` on v2) to the
    container's group; ``cgroupns`` is ``"private"`` (v2, as Docker) or ``"host"`` (v1 and hybrid);
    ``netns_path`` is the network namespace PID 1 joins for ``--network container:<id>``.
    """

    spec: ContainerSpec
    path: str
    created: str
    cgroups: dict[str, str]
    cgroupns: str = "host"
    netns_path: str = ""

    @property
    def root(self) -> str:
        """The store root the container belongs to."""
        return os.path.dirname(os.path.dirname(self.path))

    @property
    def cgroup_procs(self) -> list[str]:
        """The files a process writes ``0`` to in order to join every group of the container."""
        return cgroups.procs_files(self.cgroups)

    def to_json(self) -> dict[str, Any]:
        return {**self.spec.to_json(), "bundle": self.path, "created": self.created,
                "cgroups": dict(self.cgroups), "cgroupns": self.cgroupns, "netns_path": self.netns_path}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Bundle:
        return cls(ContainerSpec.from_json(d), d["bundle"], d.get("created", ""), dict(d["cgroups"]),
                   d.get("cgroupns", "host"), d.get("netns_path", ""))


@dataclass(frozen=True)
class ContainerState:
    """A container as the system sees it now (``status`` recomputed, not trusted from disk)."""

    id: str
    name: str
    status: str  # created | running | paused | exited
    pid: int  # host pid of the container's PID 1, 0 when not running
    exit_code: int
    oom_killed: bool
    created: str
    started_at: str
    finished_at: str
    spec: ContainerSpec
    cgroups: dict[str, str]
    bundle: str
    network_settings: dict = field(default_factory=dict)  # Docker's NetworkSettings while running
    monitor_lost_at: str = ""  # when the container's shim was found dead ("" while it lives)

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def running(self) -> bool:
        return self.status in ("running", "paused")


@dataclass(frozen=True)
class RunResult:
    """The outcome of a non-detached ``run`` or ``exec``."""

    exit_code: int
    stdout: bytes
    stderr: bytes
    oom_killed: bool = False
