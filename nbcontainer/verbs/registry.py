"""Registry verbs: pull, push, login, logout, manifest-inspect.

Progress of pull and push is shown while it happens by the face's sinks: Docker's plain lines in a
terminal, one tqdm bar per layer in a notebook (``--progress`` chooses; ``auto`` lets the face
pick). With bars, the global lines (``Digest:``, ``Status:``) become the returned value instead
of being printed, so a notebook cell shows them once.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from nbcontainer.analysis import units as D
from nbcontainer.errors import InvalidArgumentError, NotFoundError
from nbcontainer.verbs.grammar import Result, face_of, verb


def _transfer_args(p: argparse.ArgumentParser, quiet_help: str) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help=quiet_help)
    p.add_argument("--progress", choices=["auto", "plain", "tqdm"], default="auto",
                   help="plain: Docker's lines; tqdm: a bar per layer; auto: tqdm in IPython, else plain")
    p.add_argument("--insecure", action="store_true",
                   help="skip TLS verification and fall back to plain HTTP for this registry")


def _progress(a: argparse.Namespace) -> Any:
    if a.quiet or getattr(a, "output_format", "table") == "json":
        return None
    return face_of(a).transfer_progress(a.progress)


@verb("pull", "download an image from a registry")
def _pull_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", metavar="NAME[:TAG|@DIGEST]")
    p.add_argument("--platform", help="os/arch[/variant] to pick from a multi-platform image (default: host)")
    _transfer_args(p, "no progress; print only the image name")


@_pull_args
def pull(engine: Any, a: argparse.Namespace) -> Result:
    from nbcontainer.oci import Reference

    progress = _progress(a)
    res = engine.pull(a.ref, platform=a.platform, progress=progress, insecure=a.insecure)
    return Result(res, "lines", lines=[*face_of(a).kept_lines(progress), str(Reference.parse(a.ref))])


@verb("push", "upload an image to a registry")
def _push_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", metavar="IMAGE")
    p.add_argument("target", nargs="?", metavar="NAME[:TAG]", help="where to push (default: IMAGE's name)")
    _transfer_args(p, "no progress; print only the name pushed to")


@_push_args
def push(engine: Any, a: argparse.Namespace) -> Result:
    from nbcontainer.oci import Reference

    progress = _progress(a)
    digest = engine.push(a.ref, a.target, progress=progress, insecure=a.insecure)
    if a.quiet:
        return Result(digest, "lines", lines=[str(Reference.parse(a.target or a.ref))])
    return Result(digest, "lines", lines=face_of(a).kept_lines(progress))


@verb("login", "log in to a registry (credentials are kept in Docker's config.json)")
def _login_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("registry", nargs="?", default="docker.io", metavar="SERVER")
    p.add_argument("-u", "--username")
    secret = p.add_mutually_exclusive_group()
    secret.add_argument("-p", "--password")
    secret.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.add_argument("--insecure", action="store_true", help="skip TLS verification for this registry")


@_login_args
def login(engine: Any, a: argparse.Namespace) -> Result:
    username, password = a.username, a.password
    face = face_of(a)
    if a.password_stdin:
        if not username:
            raise InvalidArgumentError("login: --password-stdin needs --username")
        password = face.read_stdin().removesuffix("\n").removesuffix("\r")
    elif password is not None:
        face.warn("WARNING! Using --password via the CLI is insecure. Use --password-stdin.")
    if username is None or password is None:
        if not face.interactive:
            raise InvalidArgumentError("login: cannot prompt for credentials without a terminal "
                                       "(use -u with -p or --password-stdin)")
        username = username if username is not None else face.prompt("Username: ")
        if password is None:
            password = face.prompt("Password: ", secret=True)
    if not username or not password:
        raise InvalidArgumentError("login: a username and a password are needed")
    engine.login(a.registry, username, password, insecure=a.insecure)
    return Result(None, "lines", lines=["Login Succeeded"])


@verb("logout", "forget the credentials of a registry")
def _logout_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("registry", nargs="?", default="docker.io", metavar="SERVER")


@_logout_args
def logout(engine: Any, a: argparse.Namespace) -> Result:
    try:
        engine.logout(a.registry)
    except NotFoundError:
        return Result(None, "lines", lines=[f"Not logged in to {a.registry}"])
    return Result(None, "lines", lines=[f"Removing login credentials for {a.registry}"])


class ManifestResult(Result):
    """``--format json`` prints the manifest or index as the registry serves it, as Docker does."""

    def json_lines(self) -> list[str]:
        return [json.dumps(self.value.to_json())]


@verb("manifest-inspect", "show a remote manifest without pulling: platforms of an index, or layers")
def _manifest_inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", metavar="NAME[:TAG|@DIGEST]")
    p.add_argument("--platform", help="os/arch[/variant]: the manifest of that platform instead of the index")
    p.add_argument("--insecure", action="store_true", help="skip TLS verification for this registry")
    p.add_argument("--no-trunc", action="store_true")


@_manifest_inspect_args
def manifest_inspect(engine: Any, a: argparse.Namespace) -> Result:
    remote = engine.manifest_inspect(a.ref, platform=a.platform, insecure=a.insecure)
    digest = (lambda d: d) if a.no_trunc else D.short_id
    if remote.is_index:
        columns = ["PLATFORM", "MEDIA TYPE", "DIGEST", "SIZE"]
        rows = [[str(m.platform or ""), m.media_type, digest(m.digest), D.human_size(m.size)]
                for m in remote.manifest.manifests]
    else:
        columns = ["#", "MEDIA TYPE", "DIGEST", "SIZE"]
        rows = [[str(i), m.media_type, digest(m.digest), D.human_size(m.size)]
                for i, m in enumerate(remote.manifest.layers)]
    return ManifestResult(remote, columns=columns, rows=rows, frame="manifest")
