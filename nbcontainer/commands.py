"""The verb table shared by the CLI and the magics: one argparse grammar, one Engine call each.

Each verb is ``(configure(parser), call(engine, args) -> Result)``. A :class:`Result` carries the
typed value (what the API returns), and how to show it as text (CLI) or as a DataFrame (magics).
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any

from . import display as D
from .errors import InvalidArgumentError


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises :class:`InvalidArgumentError` instead of exiting the process."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise InvalidArgumentError(f"{self.prog}: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        if status:
            raise InvalidArgumentError(message or f"{self.prog}: error")
        raise HelpShown(message or "")


class HelpShown(Exception):
    """``-h`` was given; the help text has been printed."""


@dataclass
class Result:
    """What a verb returns. ``kind``: table, json, lines, ids or none."""

    value: Any
    kind: str = "table"
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    frame: str = ""  # name of the frames.py builder for this value

    def text(self) -> str:
        if self.kind == "table":
            return D.table(self.columns, self.rows)
        if self.kind == "json":
            return json.dumps(self.value, indent=4, default=str)
        if self.kind == "run":
            out = getattr(self.value, "stdout", b"") or b""
            err = getattr(self.value, "stderr", b"") or b""
            if err:
                import sys

                sys.stderr.write(err.decode("utf-8", "replace"))
            return out.decode("utf-8", "replace").rstrip("\n")
        return "\n".join(self.lines)

    def json_lines(self) -> list[str]:
        """``--format json``: one JSON object per line."""
        vals = self.value if isinstance(self.value, list) else [self.value]
        out = []
        for v in vals:
            if is_dataclass(v) and not isinstance(v, type):
                v = {k: x for k, x in asdict(v).items() if k not in ("image", "spec")}
            out.append(json.dumps(v, default=str, sort_keys=True))
        return out


Verb = tuple[Callable[[argparse.ArgumentParser], None], Callable[[Any, argparse.Namespace], Result]]
VERBS: dict[str, Verb] = {}
HELP: dict[str, str] = {}


def verb(name: str, help: str) -> Callable[[Callable[[argparse.ArgumentParser], None]], Any]:
    def deco(configure: Callable[[argparse.ArgumentParser], None]) -> Any:
        def register(call: Callable[[Any, argparse.Namespace], Result]) -> Callable[..., Result]:
            VERBS[name] = (configure, call)
            HELP[name] = help
            return call

        return register

    return deco


@functools.lru_cache(maxsize=8)
def build_parser(prog: str = "nbcontainer") -> ArgumentParser:
    """The grammar of every verb; built once per prog (the magics parse every call)."""
    parser = ArgumentParser(prog=prog, description="Learn, run and analyse Linux containers.")
    parser.add_argument("--root", help="store root (default $NBCONTAINER_ROOT or /var/lib/nbcontainer)")
    parser.add_argument("--format", dest="output_format", choices=["table", "json"], default="table",
                        help="json: one JSON object per line")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=ArgumentParser)
    for name, (configure, _call) in VERBS.items():
        # run/create use -h for --hostname, as Docker does; --help still works
        short_help = name not in ("run", "create")
        p = sub.add_parser(name, help=HELP[name], description=HELP[name], add_help=short_help)
        if not short_help:
            p.add_argument("--help", action="help", help="show this help message and exit")
        configure(p)
    return parser


def run(engine: Any, args: argparse.Namespace) -> Result:
    if not getattr(args, "verb", None):
        raise InvalidArgumentError("no verb given (see --help)")
    return VERBS[args.verb][1](engine, args)


from . import (  # noqa: F401  (register the verbs)
    commands_containers,
    commands_images,
    commands_network,
    commands_registry,
)
