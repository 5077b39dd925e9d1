"""Talking to one registry host: where it is, who we are, and the ``WWW-Authenticate`` dance.

* :class:`CredentialStore` keeps ``login`` credentials in a Docker-compatible ``config.json``
  (``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``; ``{"auths": {host: {"auth": b64}}}``),
  so ``docker login`` and ``nbcontainer login`` share them.
* :class:`RegistrySession` is one registry host over an ``httpx.Client``. Like Docker it pings
  ``GET /v2/`` once to learn the challenge, then answers it per request: a ``Bearer`` challenge by
  fetching a token from ``realm`` for ``service`` and the request's ``scope`` (anonymously, or with
  the stored credentials as basic auth), a ``Basic`` challenge with the stored credentials.
  Tokens are cached per scope set. Plain HTTP is used for loopback hosts and for registries named
  insecure, as Docker does.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx

from nbcontainer.errors import RegistryError
from nbcontainer.store.refs import atomic_write

__all__ = [
    "DOCKER_HUB_AUTH_KEY",
    "CredentialStore",
    "RegistrySession",
    "docker_config_path",
    "error_text",
    "parse_challenge",
    "registry_host",
]

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
# Docker keeps Hub credentials under this historical key, not under "docker.io".
DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
_LOOPBACK = ("localhost", "127.0.0.1", "::1", "[::1]")


def registry_host(registry: str) -> str:
    """The host:port to dial for a registry name (``docker.io`` → ``registry-1.docker.io``)."""
    registry = registry.removeprefix("https://").removeprefix("http://").rstrip("/")
    if registry in (DOCKER_HUB, "index.docker.io", DOCKER_HUB_AUTH_KEY.rstrip("/").split("//")[1]):
        return DOCKER_HUB_API
    return registry.removesuffix("/v1").removesuffix("/v2")


def _is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return name in _LOOPBACK or name.startswith("127.")


def docker_config_path(config_path: str | os.PathLike | None = None) -> Path:
    """``config_path``, else ``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``."""
    if config_path is not None:
        return Path(config_path)
    env = os.environ.get("DOCKER_CONFIG")
    if env:
        return Path(env) / "config.json"
    return Path.home() / ".docker" / "config.json"


class CredentialStore:
    """``login`` credentials in a Docker ``config.json``; other keys in the file are kept as they are."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = docker_config_path(path)

    @staticmethod
    def key(registry: str) -> str:
        host = registry.removeprefix("https://").removeprefix("http://").rstrip("/")
        if registry_host(host) == DOCKER_HUB_API:
            return DOCKER_HUB_AUTH_KEY
        return host

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_bytes() or b"{}")
        except FileNotFoundError:
            return {}
        except ValueError as err:
            raise RegistryError(f"cannot read credentials from {self.path}: {err}") from err
        return data if isinstance(data, dict) else {}

    def get(self, registry: str) -> tuple[str, str] | None:
        auths = self._load().get("auths") or {}
        key = self.key(registry)
        entry = auths.get(key)
        if entry is None:  # Docker also accepts the scheme-prefixed spelling
            entry = auths.get(f"https://{key}") or auths.get(f"http://{key}")
        if not entry:
            return None
        if entry.get("username") and entry.get("password"):
            return entry["username"], entry["password"]
        raw = entry.get("auth")
        if not raw:
            return None
        try:
            user, _, password = base64.b64decode(raw).decode().partition(":")
        except (ValueError, UnicodeDecodeError) as err:
            raise RegistryError(f"invalid auth entry for {key} in {self.path}") from err
        return user, password

    def set(self, registry: str, username: str, password: str) -> None:
        data = self._load()
        auths = data.setdefault("auths", {})
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        auths[self.key(registry)] = {"auth": token}
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(self.path, json.dumps(data, indent="\t").encode() + b"\n", mode=0o600)

    def remove(self, registry: str) -> bool:
        data = self._load()
        auths = data.get("auths") or {}
        key = self.key(registry)
        found = [k for k in (key, f"https://{key}", f"http://{key}") if k in auths]
        for k in found:
            del auths[k]
        if found:
            atomic_write(self.path, json.dumps(data, indent="\t").encode() + b"\n", mode=0o600)
        return bool(found)


_PARAM_RE = re.compile(r'([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="…",service="…",scope="…"`` → ``("bearer", {realm, service, scope})``."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
              for m in _PARAM_RE.finditer(rest)}
    return scheme.lower(), params


def error_text(response: httpx.Response) -> str:
    """The registry's own words: the first ``errors[].message`` of its JSON body, or the reason."""
    try:
        body = response.json()
        errors = body.get("errors") if isinstance(body, dict) else None
        if errors:
            first = errors[0]
            return str(first.get("message") or first.get("code") or "").strip() or response.reason_phrase
    except (ValueError, UnicodeDecodeError, AttributeError, httpx.ResponseNotRead):
        pass
    return response.reason_phrase.lower() or f"HTTP {response.status_code}"


def _transport_reason(err: Exception) -> str:
    text = str(err) or type(err).__name__
    m = re.search(r"\[Errno -?\d+\]\s*(.*)", text)
    if m:
        text = m.group(1)
    if isinstance(err, httpx.TimeoutException):
        return "timed out"
    return text.lower()


Body = bytes | Callable[[], Any] | None


class RegistrySession:
    """One registry host: base URL, authentication and requests that answer its challenges."""

    def __init__(
        self,
        registry: str,
        *,
        credentials: tuple[str, str] | None = None,
        insecure: bool = False,
        timeout: float = 30.0,
        user_agent: str = "nbcontainer",
    ) -> None:
        self.registry = registry
        self.host = registry_host(registry)
        self.credentials = credentials
        self.insecure = insecure or _is_loopback(self.host)
        self.scheme = "http" if _is_loopback(self.host) else "https"
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            verify=not insecure,
            follow_redirects=True,
            headers={"User-Agent": user_agent},
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=8),
        )
        self._challenge: tuple[str, dict[str, str]] | None = None
        self._pinged = False
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}
        self._lock = threading.Lock()

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.host}"

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base + path

    def close(self) -> None:
        self.client.close()

    # -- errors ---------------------------------------------------------------------------

    def unreachable(self, err: Exception, url: str) -> RegistryError:
        return RegistryError(
            f"cannot reach registry {self.host}: {_transport_reason(err)}", status=0, url=url
        )

    def error(self, response: httpx.Response, what: str) -> RegistryError:
        if not response.is_stream_consumed:
            with contextlib.suppress(httpx.HTTPError):
                response.read()
        status = response.status_code
        text = error_text(response)
        return RegistryError(f"{what}: {status} {text} ({response.request.url})",
                             status=status, url=str(response.request.url))

    # -- authentication -------------------------------------------------------------------

    def ping(self) -> httpx.Response:
        """``GET /v2/``: learns the auth challenge; falls back to HTTP for insecure registries."""
        url = self.url("/v2/")
        try:
            response = self.client.get(url)
        except httpx.TransportError as err:
            if self.insecure and self.scheme == "https":
                self.scheme = "http"
                url = self.url("/v2/")
                try:
                    response = self.client.get(url)
                except httpx.TransportError as err2:
                    raise self.unreachable(err2, url) from err2
            else:
                raise self.unreachable(err, url) from err
        if response.status_code == 401:
            header = response.headers.get("www-authenticate", "")
            if header:
                self._challenge = parse_challenge(header)
        self._pinged = True
        return response

    def check_login(self) -> None:
        """``GET /v2/`` with this session's credentials, answering the challenge, as ``docker login``.

        Raises RegistryError naming the host when the registry refuses the credentials.
        """
        try:
            response = self.request("GET", "/v2/")
            if response.status_code != 200:
                raise self.error(response, f"login to {self.host} failed")
        except RegistryError as err:
            if err.status in (401, 403):
                raise RegistryError(
                    f"login to {self.host} failed: {err.status} unauthorized: incorrect username or password",
                    status=err.status, url=err.url,
                ) from err
            raise

    def _token(self, scopes: tuple[str, ...], *, refresh: bool = False) -> str:
        assert self._challenge is not None
        with self._lock:
            cached = self._tokens.get(scopes)
            if cached and not refresh and cached[1] > time.monotonic():
                return cached[0]
        params = self._challenge[1]
        realm = params.get("realm")
        if not realm:
            raise RegistryError(f"registry {self.host} sent a bearer challenge without a realm")
        query: list[tuple[str, str]] = []
        if params.get("service"):
            query.append(("service", params["service"]))
        query.extend(("scope", s) for s in scopes)
        auth = httpx.BasicAuth(*self.credentials) if self.credentials else None
        try:
            # as a tuple of pairs: httpx types a list of pairs with its own value union, invariantly
            response = self.client.get(realm, params=tuple(query), auth=auth)
        except httpx.TransportError as err:
            raise self.unreachable(err, realm) from err
        if response.status_code != 200:
            if response.status_code in (401, 403):
                raise RegistryError(
                    f"unauthorized: token request to {realm} for {self.host} failed: "
                    f"{response.status_code} {error_text(response)}",
                    status=response.status_code, url=realm,
                )
            raise self.error(response, f"token request to {realm} failed")
        try:
            body = response.json()
        except ValueError as err:
            raise RegistryError(f"token endpoint {realm} answered no JSON", url=realm) from err
        token = body.get("token") or body.get("access_token")
        if not token:
            raise RegistryError(f"token endpoint {realm} answered no token", url=realm)
        # Refresh a little early; registries default to 60 s when they do not say.
        ttl = max(int(body.get("expires_in") or 60) - 10, 5)
        with self._lock:
            self._tokens[scopes] = (token, time.monotonic() + ttl)
        return token

    def _auth_header(self, scopes: tuple[str, ...], *, refresh: bool = False) -> dict[str, str]:
        if not self._pinged:
            self.ping()
        if self._challenge is None:
            return {}
        scheme, _ = self._challenge
        if scheme == "bearer":
            return {"Authorization": f"Bearer {self._token(scopes, refresh=refresh)}"}
        if scheme == "basic":
            if not self.credentials:
                raise RegistryError(
                    f"unauthorized: {self.host} requires a login (nbcontainer login {self.registry})",
                    status=401, url=self.url("/v2/"),
                )
            raw = base64.b64encode(":".join(self.credentials).encode()).decode()
            return {"Authorization": f"Basic {raw}"}
        return {}

    # -- requests -------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        scopes: Iterable[str] = (),
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        body: Body = None,
        stream: bool = False,
    ) -> httpx.Response:
        """Send one request with the auth its ``scopes`` need, once more with a fresh token on 401.

        ``body`` is bytes or a zero-argument callable that returns a fresh body (a file rewound,
        an iterator), so the retry can resend it.
        """
        scope_key = tuple(scopes)
        url = self.url(path)
        for attempt in (0, 1):
            hdrs = dict(headers or {})
            hdrs.update(self._auth_header(scope_key, refresh=attempt == 1))
            content = body() if callable(body) else body
            request = self.client.build_request(method, url, headers=hdrs, params=params, content=content)
            try:
                response = self.client.send(request, stream=stream)
            except httpx.TransportError as err:
                raise self.unreachable(err, url) from err
            if response.status_code != 401 or attempt == 1:
                break
            header = response.headers.get("www-authenticate", "")
            response.close()
            if header:
                self._challenge = parse_challenge(header)
            if self._challenge is None:
                break
        if response.status_code == 401:
            raise RegistryError(
                f"unauthorized: authentication required for {self.host} ({url})", status=401, url=url
            )
        return response
