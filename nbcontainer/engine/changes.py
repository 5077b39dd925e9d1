"""Dockerfile instructions applied to an image's runtime config (``commit -c``, ``import -c``)."""

from __future__ import annotations

import json
import shlex
from typing import Any

from nbcontainer.errors import InvalidArgumentError

SUPPORTED = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "USER", "VOLUME", "WORKDIR")


def _command(value: str) -> list[str]:
    """JSON (exec) form, else the shell form ``/bin/sh -c VALUE`` as Docker does."""
    value = value.strip()
    if value.startswith("["):
        try:
            parsed = json.loads(value)
        except ValueError as err:
            raise InvalidArgumentError(f"invalid JSON array {value!r}: {err}") from err
        if not isinstance(parsed, list) or not all(isinstance(x, str) for x in parsed):
            raise InvalidArgumentError(f"expected a JSON array of strings, got {value!r}")
        return parsed
    return ["/bin/sh", "-c", value]


def _pairs(value: str, what: str) -> list[tuple[str, str]]:
    words = shlex.split(value)
    if len(words) == 2 and "=" not in words[0]:
        return [(words[0], words[1])]  # legacy "ENV key value"
    out = []
    for w in words:
        if "=" not in w:
            raise InvalidArgumentError(f"{what} needs key=value, got {w!r}")
        k, v = w.split("=", 1)
        out.append((k, v))
    return out


def apply_changes(config: dict[str, Any], changes: list[str]) -> dict[str, Any]:
    """Return a copy of a runtime config (Docker's ``Config``) with each instruction applied."""
    cfg = json.loads(json.dumps(config))
    for change in changes:
        instr, _, value = change.strip().partition(" ")
        instr = instr.upper()
        if instr not in SUPPORTED:
            raise InvalidArgumentError(
                f"{instr or change!r} is not a valid change command (use one of {', '.join(SUPPORTED)})"
            )
        if instr == "CMD":
            cfg["Cmd"] = _command(value)
        elif instr == "ENTRYPOINT":
            cfg["Entrypoint"] = _command(value)
        elif instr == "ENV":
            env = [e for e in cfg.get("Env") or []]
            for k, v in _pairs(value, "ENV"):
                env = [e for e in env if e.split("=", 1)[0] != k] + [f"{k}={v}"]
            cfg["Env"] = env
        elif instr == "EXPOSE":
            ports = dict(cfg.get("ExposedPorts") or {})
            for p in value.split():
                ports[p if "/" in p else f"{p}/tcp"] = {}
            cfg["ExposedPorts"] = ports
        elif instr == "LABEL":
            labels = dict(cfg.get("Labels") or {})
            labels.update(dict(_pairs(value, "LABEL")))
            cfg["Labels"] = labels
        elif instr == "USER":
            cfg["User"] = value.strip()
        elif instr == "VOLUME":
            vols = dict(cfg.get("Volumes") or {})
            v = value.strip()
            for path in (json.loads(v) if v.startswith("[") else v.split()):
                vols[path] = {}
            cfg["Volumes"] = vols
        elif instr == "WORKDIR":
            cfg["WorkingDir"] = value.strip()
    return cfg
