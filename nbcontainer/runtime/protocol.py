"""The runner's wire format: one JSON request line per connection, one JSON reply line.

A client connects to ``run/runner.sock`` and sends one request. The runner answers ``ping`` and
``delete`` itself; it hands the connection of a ``create`` to the shim it forks and that of an
``exec`` to the exec helper, and those reply once the container is created or the command ran
(so a long exec never blocks the runner's loop). The message table::

    request (client -> runner)                    reply                                   sent by
    Ping    {"op": "ping"}                        Pong     {"ok": true, "pid"}             runner
    Create  {"op": "create", "config": SPEC,      Created  {"ok": true, "state": {...}}    shim
             "stdin": b64 | null}
    Exec    {"op": "exec", "id", "args", "env",   Finished {"ok": true, "exit_code",       exec helper
             "cwd", "user", "tty", "detach",                "pid", "stdout": b64,
             "stdin": b64 | null}                           "stderr": b64}
    Delete  {"op": "delete", "id", "force"}       Done     {"ok": true}                    runner
    any of them                                   {"error": "<class in nbcontainer.errors>",  any
                                                   "message", ("step", "errno", "detail")}

``SPEC`` is :meth:`ContainerSpec.to_json`; the runner turns it into a
:class:`~nbcontainer.runtime.bundle.Bundle`. ``state`` is the shim's ``state.json``. A detached exec
replies at once with ``exit_code`` 0 and no output. An error reply is raised on the client as the
same class of :mod:`nbcontainer.errors` with the same message; a ``RuntimeSetupError`` keeps its
``step``, ``errno`` and ``detail``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
from dataclasses import dataclass, field
from typing import Any

from nbcontainer import errors
from nbcontainer.errors import NbContainerError, RuntimeSetupError
from nbcontainer.runtime.bundle import ContainerSpec


def _b64(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode() if data is not None else None


def _unb64(text: str | None) -> bytes | None:
    return base64.b64decode(text) if text is not None else None


# -- requests ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ping:
    op = "ping"

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Ping:
        return cls()


@dataclass(frozen=True)
class Create:
    """Create ``spec`` (its hostname already chosen); ``stdin`` is fed to the process once it starts."""

    op = "create"
    spec: ContainerSpec
    stdin: bytes | None = None

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "config": self.spec.to_json(), "stdin": _b64(self.stdin)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Create:
        return cls(ContainerSpec.from_json(d["config"]), _unb64(d.get("stdin")))


@dataclass(frozen=True)
class Exec:
    """Run ``args`` in the running container ``id``; ``None`` options fall back to the container's."""

    op = "exec"
    id: str
    args: list[str]
    env: list[str] = field(default_factory=list)
    cwd: str | None = None
    user: str | None = None
    tty: bool = False
    detach: bool = False
    stdin: bytes | None = None

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "id": self.id, "args": list(self.args), "env": list(self.env), "cwd": self.cwd,
                "user": self.user, "tty": self.tty, "detach": self.detach, "stdin": _b64(self.stdin)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Exec:
        return cls(d["id"], list(d["args"]), list(d.get("env") or []), d.get("cwd"), d.get("user"),
                   bool(d.get("tty")), bool(d.get("detach")), _unb64(d.get("stdin")))


@dataclass(frozen=True)
class Delete:
    op = "delete"
    id: str
    force: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "id": self.id, "force": self.force}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Delete:
        return cls(d["id"], bool(d.get("force")))


Request = Ping | Create | Exec | Delete
_REQUESTS: dict[str, type[Request]] = {c.op: c for c in (Ping, Create, Exec, Delete)}


# -- replies -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pong:
    pid: int

    def to_json(self) -> dict[str, Any]:
        return {"ok": True, "pid": self.pid}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Pong:
        return cls(int(d["pid"]))


@dataclass(frozen=True)
class Created:
    state: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"ok": True, "state": self.state}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Created:
        return cls(dict(d.get("state") or {}))


@dataclass(frozen=True)
class Finished:
    """An exec'd command's exit code and, unless detached, its whole output."""

    exit_code: int
    pid: int
    stdout: bytes = b""
    stderr: bytes = b""

    def to_json(self) -> dict[str, Any]:
        return {"ok": True, "exit_code": self.exit_code, "pid": self.pid,
                "stdout": _b64(self.stdout), "stderr": _b64(self.stderr)}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Finished:
        return cls(int(d["exit_code"]), int(d.get("pid", 0)), base64.b64decode(d.get("stdout") or ""),
                   base64.b64decode(d.get("stderr") or ""))


@dataclass(frozen=True)
class Done:
    def to_json(self) -> dict[str, Any]:
        return {"ok": True}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Done:
        return cls()


Reply = Pong | Created | Finished | Done
REPLY_TO: dict[type[Request], type[Reply]] = {Ping: Pong, Create: Created, Exec: Finished, Delete: Done}


# -- errors --------------------------------------------------------------------------------------


def error_to_json(err: NbContainerError) -> dict[str, Any]:
    out: dict[str, Any] = {"error": type(err).__name__, "message": str(err)}
    if isinstance(err, RuntimeSetupError):
        out.update(step=err.step, errno=err.errno, detail=err.detail)
    return out


def error_from_json(d: dict[str, Any]) -> NbContainerError:
    """The exception an error reply stands for (``NbContainerError`` for a name we do not know)."""
    cls = getattr(errors, str(d["error"]), None)
    if not (isinstance(cls, type) and issubclass(cls, NbContainerError)):
        cls = NbContainerError
    if cls is RuntimeSetupError:
        return RuntimeSetupError(d.get("step", ""), int(d.get("errno") or 0), d.get("detail", ""))
    message = str(d.get("message", ""))
    try:
        return cls(message)
    except TypeError:  # a class built from parts (DigestMismatchError): keep the class and the message
        err = cls.__new__(cls)
        NbContainerError.__init__(err, message)
        return err


# -- lines ---------------------------------------------------------------------------------------


def encode(msg: Request | Reply | NbContainerError) -> bytes:
    """One JSON line."""
    obj = error_to_json(msg) if isinstance(msg, NbContainerError) else msg.to_json()
    return json.dumps(obj).encode() + b"\n"


def decode_request(line: bytes) -> Request:
    d = json.loads(line)
    cls = _REQUESTS.get(d.get("op"))
    if cls is None:
        raise NbContainerError(f"runner: unknown operation {d.get('op')!r}")
    return cls.from_json(d)


def decode_reply(line: bytes, request: Request) -> Reply:
    """The reply to ``request``; an error reply is raised, a missing one is a ``RuntimeSetupError``."""
    if not line:
        raise RuntimeSetupError("runner", 0, f"no answer to {request.op!r} from the runner")
    d = json.loads(line)
    if "error" in d:
        raise error_from_json(d)
    return REPLY_TO[type(request)].from_json(d)


def send(conn: socket.socket, msg: Reply | NbContainerError) -> None:
    """Reply on ``conn``; a client that went away is not an error (``state.json`` tells the story)."""
    with contextlib.suppress(OSError):
        conn.sendall(encode(msg))


def recv_line(conn: socket.socket) -> bytes:
    """Read up to and including the newline (or EOF) from a blocking socket."""
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = conn.recv(1 << 20)
        if not chunk:
            break
        buf += chunk
    return buf
