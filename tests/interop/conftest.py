"""Interop fixtures: a real ``docker-registry`` on loopback, with and without htpasswd auth, and small
Python fronts for the cases the registry cannot play itself (a bearer-token service, a connection
that breaks mid-blob).

Every process and server is stopped by the handle the fixture started, also when the test fails.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import secrets
import shutil
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from nbcontainer.oci import MT_OCI_LAYER, Descriptor, History, ImageConfig
from nbcontainer.store import Image, ImageStore

REGISTRY_BIN = shutil.which("docker-registry")
USER, PASSWORD = "alice", "s3cret-pw"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Registry:
    """A running ``docker-registry serve``: ``host`` is ``127.0.0.1:PORT``, ``storage`` its root dir."""

    proc: subprocess.Popen
    port: int
    storage: Path
    log: Path

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def blob_path(self, digest: str) -> Path:
        hexd = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_registry(workdir: Path, *, htpasswd: str | None = None) -> Registry:
    if REGISTRY_BIN is None:
        pytest.skip("docker-registry is not installed (apt-get install docker-registry)")
    workdir.mkdir(parents=True, exist_ok=True)
    storage = workdir / "storage"
    storage.mkdir(exist_ok=True)
    port = free_port()
    auth = ""
    if htpasswd is not None:
        (workdir / "htpasswd").write_text(htpasswd)
        auth = f"auth:\n  htpasswd:\n    realm: nbcontainer-test\n    path: {workdir / 'htpasswd'}\n"
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        + auth
    )
    log = workdir / "registry.log"
    with open(log, "wb") as logf:
        proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=logf, stderr=subprocess.STDOUT)
    reg = Registry(proc, port, storage, log)
    deadline = time.monotonic() + 15
    while True:
        try:
            if httpx.get(f"http://{reg.host}/v2/", timeout=1).status_code in (200, 401):
                return reg
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            reg.stop()
            raise RuntimeError(f"docker-registry did not start: {log.read_text()[-2000:]}")
        time.sleep(0.05)


@pytest.fixture
def registry(tmp_path: Path):
    reg = start_registry(tmp_path / "registry")
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture
def auth_registry(tmp_path: Path):
    """A registry that demands Basic auth (htpasswd, bcrypt) for ``USER``/``PASSWORD``."""
    if shutil.which("htpasswd") is None:
        pytest.skip("htpasswd is not installed (apt-get install apache2-utils)")
    line = subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], check=True, capture_output=True,
                          text=True).stdout.strip()
    reg = start_registry(tmp_path / "auth-registry", htpasswd=line + "\n")
    try:
        yield reg
    finally:
        reg.stop()


# -- a Python front for the registry -------------------------------------------------------------


@dataclass
class Front:
    """A threading HTTP server on loopback that forwards ``/v2/`` to a registry.

    ``token_auth`` makes it a bearer-token registry with its own ``/token`` endpoint (anonymous
    tokens may pull, ``USER``/``PASSWORD`` may push); ``cut_blob_after`` breaks the first blob GET
    after that many bytes. ``log`` keeps ``(method, path, headers)`` of every request.
    """

    upstream: str
    token_auth: bool = False
    cut_blob_after: int | None = None
    log: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    token_requests: list[dict[str, list[str]]] = field(default_factory=list)
    tokens: dict[str, set[str]] = field(default_factory=dict)
    server: ThreadingHTTPServer | None = None
    thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> Front:
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _send(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _token(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                front.token_requests.append(query)
                allowed_push = False
                auth = self.headers.get("Authorization", "")
                if auth:
                    user, _, pw = base64.b64decode(auth.split(" ", 1)[1]).decode().partition(":")
                    if (user, pw) != (USER, PASSWORD):
                        self._send(401, {"Content-Type": "application/json"},
                                   b'{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}')
                        return
                    allowed_push = True
                grants: set[str] = set()
                for scope in query.get("scope", []):
                    _kind, _, rest = scope.partition(":")
                    repo, _, actions = rest.rpartition(":")
                    for action in actions.split(","):
                        if action == "pull" or allowed_push:
                            grants.add(f"{repo}:{action}")
                token = secrets.token_hex(8)
                front.tokens[token] = grants
                self._send(200, {"Content-Type": "application/json"},
                           json.dumps({"token": token, "expires_in": 300}).encode())

            def _authorized(self) -> bool:
                if not front.token_auth:
                    return True
                parts = urlsplit(self.path).path.split("/")
                need = None
                for marker in ("manifests", "blobs"):
                    if marker in parts[3:]:
                        repo = "/".join(parts[2:parts.index(marker, 3)])
                        need = f"{repo}:{'pull' if self.command in ('GET', 'HEAD') else 'push'}"
                        break
                auth = self.headers.get("Authorization", "")
                bearer = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
                grants = front.tokens.get(bearer)
                if grants is not None and (need is None or need in grants):
                    return True
                challenge = f'Bearer realm="http://{front.host}/token",service="nbc-test"'
                if need:
                    repo, _, action = need.rpartition(":")
                    challenge += f',scope="repository:{repo}:{action}"'
                self._send(401, {"WWW-Authenticate": challenge, "Content-Type": "application/json"},
                           b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}')
                return False

            def _proxy(self) -> None:
                body = self._body()
                front.log.append((self.command, self.path, dict(self.headers)))
                if urlsplit(self.path).path == "/token":
                    self._token()
                    return
                if not self._authorized():
                    return
                conn = http.client.HTTPConnection(front.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("authorization", "transfer-encoding", "connection")}
                if body or self.command in ("PUT", "PATCH", "POST"):
                    headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                out = {k: v for k, v in resp.getheaders()
                       if k.lower() not in ("transfer-encoding", "connection", "content-length")}
                if self.command == "HEAD":
                    out["Content-Length"] = resp.getheader("Content-Length", "0")
                conn.close()
                cut = front.cut_blob_after
                if (cut is not None and self.command == "GET" and "/blobs/sha256:" in self.path
                        and resp.status == 200 and len(data) > cut):
                    front.cut_blob_after = None  # only once
                    self.send_response(200)
                    for k, v in out.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self._send(resp.status, out, data)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _proxy

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def token_registry(registry: Registry):
    """The registry behind a bearer-token front with its own token endpoint."""
    front = Front(registry.host, token_auth=True).start()
    try:
        yield front
    finally:
        front.stop()


@pytest.fixture
def recording_front(registry: Registry):
    """The registry behind a front that only records requests (``front.log``)."""
    front = Front(registry.host).start()
    try:
        yield front
    finally:
        front.stop()


@pytest.fixture
def flaky_front(registry: Registry):
    """The registry behind a front that breaks the first blob download after 64 KiB."""
    front = Front(registry.host, cut_blob_after=64 << 10).start()
    try:
        yield front
    finally:
        front.stop()


# -- images built in the test ---------------------------------------------------------------------


def layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, data in sorted(files.items()):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o755 if path.startswith("bin/") else 0o644
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build_image(store: ImageStore, name: str, layers: list[dict[str, bytes]], *,
                arch: str = "amd64", variant: str = "") -> Image:
    """An image of uncompressed layers (one tar per dict) with diff_ids and history, named ``name``."""
    descs = []
    for files in layers:
        data = layer_tar(files)
        digest = store.content.put(data)
        descs.append(Descriptor(MT_OCI_LAYER, digest, len(data)))
    history = [History(created="2024-01-01T00:00:00Z", created_by=f"/bin/sh -c #(nop) ADD layer {i}")
               for i in range(len(layers))]
    history.append(History(created="2024-01-01T00:00:00Z", created_by='/bin/sh -c #(nop) CMD ["sh"]',
                           empty_layer=True))
    config = ImageConfig(
        architecture=arch, os="linux", variant=variant, created="2024-01-01T00:00:00Z",
        config={"Cmd": ["sh"], "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        diff_ids=tuple(d.digest for d in descs), history=tuple(history),
    )
    return store.add_image(config, descs, name)


@pytest.fixture
def make_image() -> Callable[..., Image]:
    return build_image


@pytest.fixture
def registry_credentials() -> tuple[str, str]:
    """The user and password the auth fixtures accept."""
    return USER, PASSWORD


@pytest.fixture
def unused_port() -> int:
    return free_port()
