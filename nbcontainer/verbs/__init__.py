"""The Docker-style verbs shared by the CLI and the magics, listed in one explicit table.

A verb parses its arguments, makes one Engine call and returns a typed
:class:`~nbcontainer.verbs.grammar.Result`; the faces (``cli/``, ``notebook/``) render it. One
module per noun: ``images``, ``containers``, ``networks``, ``registry``.
"""

from __future__ import annotations

import argparse
import functools
from typing import Any

from nbcontainer.errors import InvalidArgumentError
from nbcontainer.verbs import containers, images, networks, registry
from nbcontainer.verbs.grammar import ArgumentParser, HelpShown, Result, Verb, build_parser, verb_name

__all__ = ["VERBS", "ArgumentParser", "HelpShown", "Result", "Verb", "call", "parser", "parser_for"]

VERBS: tuple[Verb, ...] = (
    # images
    images.bootstrap, images.import_, images.images, images.history, images.layers, images.inspect,
    images.tag, images.rmi, images.df, images.mount, images.umount, images.fsck, images.prune, images.files,
    images.save, images.load,
    # containers
    containers.run, containers.create, containers.start, containers.stop, containers.kill, containers.pause,
    containers.unpause, containers.rm, containers.wait, containers.exec_, containers.ps, containers.logs,
    containers.top, containers.diff, containers.commit, containers.export, containers.container_prune,
    # networks
    networks.network, networks.port,
    # registry
    registry.pull, registry.push, registry.login, registry.logout, registry.manifest_inspect,
)
_BY_NAME = {v.name: v for v in VERBS}


@functools.lru_cache(maxsize=8)
def parser(prog: str = "nbcontainer") -> ArgumentParser:
    """The grammar of every verb, built once per prog (the magics parse on every call)."""
    return build_parser(VERBS, prog)


def parser_for(argv: list[str], prog: str = "nbcontainer") -> ArgumentParser:
    """The grammar one command line needs: its verb's alone (the CLI's start-up is measured), else all."""
    name = verb_name(argv)
    if name is None or name not in _BY_NAME:
        return parser(prog)
    return build_parser((_BY_NAME[name],), prog)


def call(engine: Any, args: argparse.Namespace) -> Result:
    """Run the verb ``args.verb`` on ``engine``."""
    if not getattr(args, "verb", None):
        raise InvalidArgumentError("no verb given (see --help)")
    return _BY_NAME[args.verb](engine, args)
