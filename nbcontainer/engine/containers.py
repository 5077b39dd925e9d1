"""Containers, one of the nouns :class:`nbcontainer.Engine` composes: run, exec, ps, stop, rm, logs,
top, inspect, diff, commit, export.

A container is a runtime container (``containers/<id>/``) plus a container layer
(``overlay/<id>/``) over its image's committed chain. The engine records the image id, chain id
and snapshot key in the runtime spec's annotations, so every part can find the others.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import secrets
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbcontainer.engine.core import Core
from nbcontainer.engine.networks import Networks, ports_text
from nbcontainer.errors import (
    InvalidArgumentError,
    NotFoundError,
    StateTransitionError,
)
from nbcontainer.layers.diff import DiffRow, upper_changes
from nbcontainer.oci import MT_OCI_LAYER, Descriptor, Digest, History, ImageConfig

if TYPE_CHECKING:
    from nbcontainer.runtime import ContainerState

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class ContainerRow:
    id: str
    image: str
    command: str
    created: _dt.datetime | None
    status: str
    state: str
    name: str
    pid: int
    exit_code: int
    ports: str = ""


def parse_size(text: str | int | None) -> int:
    """``512m`` → bytes, Docker's RAMInBytes (binary units)."""
    if text in (None, "", 0):
        return 0
    if isinstance(text, int):
        return text
    t = text.strip().lower().removesuffix("b")
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    try:
        if t and t[-1] in mult:
            return int(float(t[:-1]) * mult[t[-1]])
        return int(t)
    except ValueError:
        raise InvalidArgumentError(f"invalid size {text!r} (use e.g. 64m or 1g)") from None


def parse_volume(spec: str) -> Any:
    """``-v SRC:DST[:ro|rw]`` -> a :class:`~nbcontainer.runtime.Volume` (SRC must exist)."""
    from nbcontainer.runtime import Volume

    parts = spec.split(":")
    if len(parts) < 2 or len(parts) > 3 or not parts[0] or not parts[1]:
        raise InvalidArgumentError(f"invalid volume specification {spec!r} (use SRC:DST[:ro])")
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise InvalidArgumentError(f"invalid volume mode {mode!r} in {spec!r}")
    src = os.path.abspath(os.path.expanduser(parts[0]))
    if not os.path.exists(src):
        raise InvalidArgumentError(f"invalid volume {spec!r}: source path {src!r} does not exist")
    if not parts[1].startswith("/"):
        raise InvalidArgumentError(f"invalid volume {spec!r}: destination must be an absolute path")
    return Volume(src, parts[1], readonly=mode == "ro")


def parse_security_opts(opts: list[str]) -> tuple[str, bool]:
    """``--security-opt`` values as Docker reads them -> (seccomp setting, no_new_privileges).

    ``seccomp=unconfined``, ``seccomp=PROFILE.json`` (Docker's schema, read now: the container keeps
    the profile it was created with), ``no-new-privileges[=true|false]``; ``:`` works for ``=`` as in
    older Docker.
    """
    from nbcontainer.runtime import seccomp

    profile, nnp = "default", False
    for opt in opts:
        key, _, value = opt.replace(":", "=", 1).partition("=")
        if key == "no-new-privileges":
            if value not in ("", "true", "false"):
                raise InvalidArgumentError(
                    f"invalid --security-opt {opt!r}: want no-new-privileges[=true|false]")
            nnp = value != "false"
        elif key == "seccomp" and value:
            if value == "unconfined":
                profile = "unconfined"
            else:
                try:
                    with open(value) as f:
                        text = f.read()
                except OSError as err:
                    raise InvalidArgumentError(f"seccomp profile {value!r}: {err.strerror}") from None
                parsed = seccomp.parse_profile(text, f"seccomp profile {value!r}")
                profile = json.dumps(parsed, sort_keys=True)
        else:
            raise InvalidArgumentError(f"invalid --security-opt {opt!r}: supported are "
                                       "seccomp=unconfined|PROFILE.json and no-new-privileges")
    return profile, nnp


def parse_devices(specs: list[str]) -> list[Any]:
    """``--device HOST[:CONTAINER][:PERMS]`` -> :class:`~nbcontainer.runtime.Device` nodes to make
    (the device cgroup allows exactly those)."""
    from nbcontainer.runtime import Device, devices

    out = []
    for spec in specs:
        host, path, rule, mode = devices.parse_device(spec)
        st = os.stat(host)
        out.append(Device(host, path, rule.type, rule.major, rule.minor, mode, st.st_uid, st.st_gid,
                          rule.access))
    return out


def read_env_file(path: str) -> list[str]:
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        raise NotFoundError(f"env file {path!r} not found") from None
    out = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        out.append(line if "=" in line else f"{line}={os.environ.get(line, '')}")
    return out


def merge_env(image_env: list[str], extra: list[str]) -> list[str]:
    env: dict[str, str] = {}
    for item in [*image_env, *extra]:
        if "=" in item:
            k, v = item.split("=", 1)
        else:
            k, v = item, os.environ.get(item, "")
        env[k] = v
    env.setdefault("PATH", DEFAULT_PATH.split("=", 1)[1])
    return [f"{k}={v}" for k, v in env.items()]


class Containers:
    """The container verbs over a :class:`~nbcontainer.engine.core.Core`; ``networks`` picks the
    network mode of a new container."""

    def __init__(self, core: Core, networks: Networks) -> None:
        self.core = core
        self.networks = networks


    def container(self, ref: str) -> ContainerState:
        """A container's state by name, full id or unique id prefix."""
        return self.core.container(ref)

    # -- create / run -------------------------------------------------------------------

    def create(self, image: str, command: list[str] | str | None = None, **opts: Any) -> Any:
        spec = self._spec(image, command, **opts)
        try:
            return self.core.runtime.create(spec)
        except BaseException:
            self.core.snapshots.remove(spec.id)
            raise

    def run(self, image: str, command: list[str] | str | None = None, *, detach: bool = False,
            remove: bool = False, **opts: Any) -> Any:
        """``docker run``. Detached: the container's state. Else a result with exit_code, stdout, stderr."""
        spec = self._spec(image, command, **opts)
        if remove and detach:
            spec.auto_remove = True  # removed once seen exited (ps, wait, stop, prune)
        try:
            result = self.core.runtime.run(spec, detach=detach)
        except BaseException:
            with contextlib.suppress(Exception):  # the first error is the one to report
                self.core.runtime.delete(spec.id, force=True)
            self.core.snapshots.remove(spec.id)
            raise
        if remove and not detach:
            self.rm(spec.id, force=True)
        return result

    def _spec(self, image: str, command: list[str] | str | None = None, *, name: str | None = None,
              env: list[str] | None = None, env_file: list[str] | None = None,
              volumes: list[str] | None = None,
              workdir: str | None = None, user: str | None = None, hostname: str | None = None,
              entrypoint: str | list[str] | None = None, memory: str | int | None = None,
              pids_limit: int = 0, cpus: float = 0.0, read_only: bool = False,
              cap_add: list[str] | None = None, cap_drop: list[str] | None = None, network: str | None = None,
              stdin: bytes | None = None, tty: bool = False, publish: list[str] | None = None,
              attach: bool = False, tty_size: tuple[int, int] | None = None, devices: list[str] | None = None,
              security_opt: list[str] | None = None) -> Any:
        from nbcontainer.runtime import ContainerSpec

        seccomp_profile, no_new_privileges = parse_security_opts(list(security_opt or []))
        device_nodes = parse_devices(list(devices or []))
        img = self.core.store.resolve(image)
        self.core.unpack(img)
        cfg = img.config.config
        if isinstance(command, str):
            command = shlex.split(command)
        if entrypoint is not None:
            ep = shlex.split(entrypoint) if isinstance(entrypoint, str) else list(entrypoint)
        else:
            ep = list(cfg.get("Entrypoint") or [])
        cmd = list(command) if command else ([] if entrypoint is not None else list(cfg.get("Cmd") or []))
        args = ep + cmd
        if not args:
            raise InvalidArgumentError(f"no command specified and image {image!r} has no CMD or ENTRYPOINT")
        extra_env = []
        for f in env_file or []:
            extra_env += read_env_file(f)
        extra_env += env or []
        mounts = [parse_volume(v) for v in volumes or []]
        cid = secrets.token_hex(32)
        chain = img.config.chain_ids[-1] if img.config.chain_ids else ""
        layer = self.core.snapshots.prepare(cid, chain)
        rootfs = self.core.snapshots.mount(cid)
        name = name or ""  # the runner picks a free one atomically
        annotations = {
            "image": image, "image_id": str(img.id), "chain_id": chain, "snapshot_key": cid,
            "created_by": shlex.join(args), "command": shlex.join(args),
        }
        network = self.networks.network_mode(network, publish)
        attach = attach and tty  # ``run -it``: the shim serves the pty on attach.sock
        return ContainerSpec(
            id=cid, name=name, rootfs=rootfs, merged=str(layer.merged),
            args=args, env=merge_env(list(cfg.get("Env") or []), extra_env),
            cwd=workdir or cfg.get("WorkingDir") or "/",
            user=user if user is not None else cfg.get("User", ""),
            hostname=hostname or cid[:12], mounts=mounts, readonly_rootfs=read_only,
            cap_add=list(cap_add or []), cap_drop=list(cap_drop or []), memory=parse_size(memory),
            pids_limit=int(pids_limit or 0), cpus=float(cpus or 0.0), network=network, stdin=stdin, tty=tty,
            devices=device_nodes, seccomp=seccomp_profile, no_new_privileges=no_new_privileges,
            annotations=annotations, publish=list(publish or []), attach=attach,
            tty_size=(int(tty_size[0]), int(tty_size[1])) if attach and tty_size else None,
        )

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, ref: str) -> Any:
        return self.core.runtime.start(self.container(ref).id)

    def attach(self, ref: str) -> Any:
        """A socket to the terminal of a container created with ``tty=True, attach=True``."""
        return self.core.runtime.attach(self.container(ref).id)

    def stop(self, ref: str, *, timeout: int = 10) -> Any:
        c = self.container(ref)
        self.core.runtime.stop(c.id, timeout=timeout)
        return self._after_exit(c.id)

    def kill(self, ref: str, *, signal: str | int = "KILL") -> Any:
        import signal as _signal

        c = self.container(ref)
        if isinstance(signal, str):
            sig = signal.upper().removeprefix("SIG")
            signum = int(sig) if sig.isdigit() else getattr(_signal, "SIG" + sig, None)
            if signum is None:
                raise InvalidArgumentError(f"invalid signal {signal!r}")
        else:
            signum = signal
        self.core.runtime.kill(c.id, int(signum))
        return c

    def pause(self, ref: str) -> Any:
        return self.core.runtime.pause(self.container(ref).id)

    def unpause(self, ref: str) -> Any:
        return self.core.runtime.unpause(self.container(ref).id)

    def wait(self, ref: str, *, timeout: float | None = None) -> int:
        c = self.container(ref)
        code = self.core.runtime.wait(c.id, timeout=timeout)
        self._after_exit(c.id)
        return code

    def _after_exit(self, cid: str) -> Any:
        s = self.core.runtime.state(cid)
        self._reap([s])
        return s

    def _reap(self, states: list[Any]) -> list[Any]:
        """Remove exited ``run -d --rm`` containers; return the others."""
        alive = []
        for s in states:
            if s.status == "exited" and s.spec.auto_remove:
                with contextlib.suppress(NotFoundError):  # another caller reaped it first
                    self.rm(s.id, force=True)
            else:
                alive.append(s)
        return alive

    def rm(self, ref: str, *, force: bool = False) -> str:
        c = self.container(ref)
        self.core.runtime.delete(c.id, force=force)
        self.core.snapshots.remove(c.spec.annotations.get("snapshot_key", c.id))
        return c.id

    def container_prune(self) -> list[str]:
        gone = []
        for s in self.core.runtime.list():
            if s.status == "exited":
                gone.append(self.rm(s.id))
        return gone

    def exec(self, ref: str, command: list[str] | str, **opts: Any) -> Any:
        c = self.container(ref)
        if isinstance(command, str):
            command = shlex.split(command)
        if c.status != "running":
            raise StateTransitionError(f"container {c.name} is not running")
        return self.core.runtime.exec(c.id, list(command), **opts)

    def ps(self, *, all: bool = False) -> list[ContainerRow]:
        from nbcontainer.engine.results import parse_time

        rows = []
        for s in self._reap(self.core.runtime.list()):
            if not all and s.status not in ("running", "paused"):
                continue
            ann = s.spec.annotations
            rows.append(ContainerRow(
                id=s.id, image=ann.get("image", ""), command=ann.get("command", ""),
                created=parse_time(s.created), status=_status_text(s), state=s.status, name=s.name,
                pid=s.pid, exit_code=s.exit_code if s.exit_code is not None else 0,
                ports=ports_text(s.network_settings.get("Ports") or {}),
            ))
        rows.sort(key=lambda r: r.created or _dt.datetime.min.replace(tzinfo=_dt.UTC), reverse=True)
        return rows

    def logs(self, ref: str, *, tail: int | None = None, follow: bool = False) -> Iterator[tuple[str, bytes]]:
        return self.core.runtime.logs(self.container(ref).id, tail=tail, follow=follow)

    def top(self, ref: str) -> list[dict[str, Any]]:
        c = self.container(ref)
        if c.status not in ("running", "paused"):
            raise StateTransitionError(f"container {c.name} is not running")
        return self.core.runtime.top(c.id)

    def inspect_container(self, ref: str) -> dict[str, Any]:
        c = self.container(ref)
        spec = c.spec
        layer = self.core.snapshots.container_layer(spec.annotations.get("snapshot_key", c.id))
        lower = [str(d) for d in layer.lower_dirs]
        return {
            "Id": c.id,
            "Created": c.created,
            "Path": spec.args[0] if spec.args else "",
            "Args": spec.args[1:],
            "State": {
                "Status": c.status, "Running": c.status == "running", "Paused": c.status == "paused",
                "OOMKilled": bool(c.oom_killed), "Dead": False,
                "Pid": c.pid if c.status in ("running", "paused") else 0, "ExitCode": c.exit_code or 0,
                "StartedAt": c.started_at or "", "FinishedAt": c.finished_at or "",
                "Error": f"the container's monitor died at {c.monitor_lost_at}" if c.monitor_lost_at else "",
            },
            "Image": spec.annotations.get("image_id", ""),
            "Name": "/" + c.name,
            "Driver": "overlay2",
            "HostConfig": {
                "Binds": [f"{m.source}:{m.destination}{':ro' if m.readonly else ''}" for m in spec.mounts],
                "NetworkMode": spec.network, "Memory": spec.memory, "PidsLimit": spec.pids_limit,
                "NanoCpus": int(spec.cpus * 1e9), "ReadonlyRootfs": spec.readonly_rootfs,
                "CapAdd": spec.cap_add or None, "CapDrop": spec.cap_drop or None,
                "AutoRemove": spec.auto_remove,
                "Devices": [{"PathOnHost": d.host, "PathInContainer": d.path, "CgroupPermissions": d.access}
                            for d in spec.devices] or None,
                "SecurityOpt": ([f"seccomp={'unconfined' if spec.seccomp == 'unconfined' else 'custom'}"]
                                if spec.seccomp != "default" else [])
                + (["no-new-privileges"] if spec.no_new_privileges else []) or None,
            },
            "GraphDriver": {"Name": "overlay2", "Data": {
                "LowerDir": ":".join(lower),
                "UpperDir": str(layer.upper), "WorkDir": str(layer.work), "MergedDir": str(layer.merged),
            }},
            "Mounts": [{"Type": "bind", "Source": m.source, "Destination": m.destination,
                        "RW": not m.readonly, "Propagation": "rprivate"} for m in spec.mounts],
            "Config": {
                "Hostname": spec.hostname, "User": spec.user, "Env": spec.env, "Cmd": spec.args,
                "Image": spec.annotations.get("image", ""), "WorkingDir": spec.cwd, "Tty": spec.tty,
                "OpenStdin": spec.stdin is not None,
            },
            "NetworkSettings": getattr(c, "network_settings", None) or {
                "Bridge": "", "IPAddress": "", "IPPrefixLen": 0, "Gateway": "", "MacAddress": "",
                "Ports": {}, "Networks": {} if ":" in spec.network else {spec.network: {}}},
        }

    # -- the container layer -------------------------------------------------------------

    def diff(self, ref: str) -> list[DiffRow]:
        """``docker diff``: A/C/D read from the upper dir only; parents of a change are C."""
        c = self.container(ref)
        layer = self.core.snapshots.container_layer(c.spec.annotations.get("snapshot_key", c.id))
        return upper_changes(str(layer.upper), [str(d) for d in layer.lower_dirs])

    def commit(self, ref: str, repo: str | None = None, *, message: str = "", author: str = "",
               changes: list[str] | None = None, pause: bool = True, squash: bool = False,
               progress: Callable[[int], None] | None = None) -> Any:
        """``docker commit``: the upper dir becomes one OCI layer over the container's image."""
        from nbcontainer import layers as _layers
        from nbcontainer.engine.changes import apply_changes
        from nbcontainer.engine.results import utcnow

        c = self.container(ref)
        key = c.spec.annotations.get("snapshot_key", c.id)
        upper = self.core.snapshots.container_layer(key).upper
        base = self.core.store.resolve(c.spec.annotations["image_id"])
        froze = False
        if pause and c.status == "running":
            self.core.runtime.pause(c.id)
            froze = True
        try:
            with self.core.store.content.writer() as w:
                if squash:
                    from nbcontainer.layers import write_flat_tar

                    # the image's layers only: the init dir's stubs are the runtime's, not the image's
                    lowers = self.core.snapshots.container_layer(key).image_dirs
                    dirs = [str(upper), *(str(d) for d in lowers)]
                    write_flat_tar(dirs, w)  # type: ignore[arg-type]  # a Writer is a binary sink
                else:
                    _layers.write_layer(str(upper), w)  # type: ignore[arg-type]
                diff_id = w.commit(what=f"layer of container {c.name}")
                size = w.size
        finally:
            if froze:
                self.core.runtime.unpause(c.id)
        runtime_cfg = dict(base.config.config)
        runtime_cfg["Env"] = c.spec.env
        if c.spec.args and (changes is None or not any(x.upper().startswith("CMD") for x in changes)):
            ep = list(runtime_cfg.get("Entrypoint") or [])
            runtime_cfg["Cmd"] = c.spec.args[len(ep):] if c.spec.args[: len(ep)] == ep else c.spec.args
        runtime_cfg = apply_changes(runtime_cfg, changes or [])
        now = utcnow()
        row = History(created=now, created_by=shlex.join(c.spec.args), author=author, comment=message)
        layer = Descriptor(MT_OCI_LAYER, diff_id, size)
        if squash:
            # As ``docker build --squash``: one layer; the old rows stay, marked empty.
            old = tuple(History(h.created, h.created_by, h.author, h.comment, True)
                        for h in base.config.history)
            diff_ids: tuple[Digest, ...] = (diff_id,)
            history, layers = (*old, row), [layer]
        else:
            diff_ids = (*base.config.diff_ids, diff_id)
            history, layers = (*base.config.history, row), [*base.manifest.layers, layer]
        cfg = ImageConfig(
            architecture=base.config.architecture, os=base.config.os, created=now,
            author=author, config=runtime_cfg, diff_ids=diff_ids,
            history=history, variant=base.config.variant, extra=base.config.extra,
        )
        img = self.core.add_and_unpack(cfg, layers, repo, progress)
        budget = self.core.snapshots.lower_budget(len(layers) + 1)
        if budget < 16:
            import warnings

            warnings.warn(
                f"image {img.id.short} has {len(layers)} layers; only {budget} more fit in the overlay "
                "mount option: commit with --squash", stacklevel=2)
        return img

    def export(self, ref: str, out: str | os.PathLike) -> str:
        """``docker export``: the container's flattened rootfs as a tar (no whiteouts)."""
        from nbcontainer.layers import write_flat_tar

        c = self.container(ref)
        layer = self.core.snapshots.container_layer(c.spec.annotations.get("snapshot_key", c.id))
        dirs = [str(layer.upper), *(str(d) for d in layer.lower_dirs)]
        with open(out, "wb") as f:
            write_flat_tar(dirs, f)
        return os.fspath(out)


def _status_text(s: Any) -> str:
    from nbcontainer.analysis.units import since
    from nbcontainer.engine.results import parse_time

    if s.status == "running":
        return "Up " + since(parse_time(s.started_at)).removesuffix(" ago")
    if s.status == "paused":
        return "Up " + since(parse_time(s.started_at)).removesuffix(" ago") + " (Paused)"
    if s.status == "created":
        return "Created"
    return f"Exited ({s.exit_code}) {since(parse_time(s.finished_at))}"

