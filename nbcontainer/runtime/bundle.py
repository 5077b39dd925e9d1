"""What the engine asks for (:class:`ContainerSpec`) and what it gets back (state, run result)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from nbcontainer.snapshot.overlay import Mount


@dataclass
class ContainerSpec:
    """A container to create; serialised (without ``stdin``) to ``containers/<id>/config.json``.

    ``rootfs`` is the snapshot's :class:`~nbcontainer.snapshot.Mount` and ``merged`` its target.
    ``args`` is the full argv (entrypoint + cmd). ``user`` is ``uid[:gid]`` or a name looked up in
    the image's /etc/passwd and /etc/group. ``mounts`` are volumes
    ``{"source": host path, "destination": path in the container, "readonly": bool}``.
    ``cap_add``/``cap_drop`` take Docker's names, with or without ``CAP_``, or ``ALL``.
    ``network`` is ``"none"``, ``"host"``, ``"container:<id>"`` or a network name (``"bridge"``). ``stdin`` is fed to the process, then closed.
    ``devices`` are ``--device`` nodes ``{"host", "path", "type": "c"|"b", "major", "minor", "mode",
    "access"}``; ``seccomp`` is ``"default"`` (Docker's profile), ``"unconfined"`` or a profile's
    JSON text; ``no_new_privileges`` sets the flag (Docker's default: off).
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
    mounts: list[dict] = field(default_factory=list)
    readonly_rootfs: bool = False
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    memory: int = 0
    pids_limit: int = 0
    cpus: float = 0.0
    network: str = "none"
    stdin: bytes | None = None
    tty: bool = False
    devices: list[dict] = field(default_factory=list)
    seccomp: str = "default"
    no_new_privileges: bool = False
    annotations: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("rootfs", "stdin")}
        out["rootfs"] = self.rootfs.to_json()
        for key in ("args", "env", "cap_add", "cap_drop"):
            out[key] = list(out[key])
        out["mounts"] = [dict(m) for m in self.mounts]
        out["devices"] = [dict(d) for d in self.devices]
        out["annotations"] = dict(self.annotations)
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ContainerSpec:
        names = {f.name for f in fields(cls)} - {"rootfs", "stdin"}
        return cls(rootfs=Mount.from_json(d["rootfs"]), **{k: v for k, v in d.items() if k in names})


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
