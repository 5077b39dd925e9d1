"""The grammar shared by the CLI and the magics: argparse that raises, :class:`Verb`, :class:`Result`.

A :class:`Verb` is ``configure(parser)`` plus ``call(engine, args) -> Result``; the table of all of
them is :data:`nbcontainer.verbs.VERBS`. A :class:`Result` carries the typed value (what the API
returns) and a presentation of it — table cells, lines or JSON — that each face renders its own way
(text in the CLI, DataFrames in the magics). Nothing here reads stdin or writes stdout.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any

from nbcontainer.errors import InvalidArgumentError


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

    exit_code: int = 0

    def output(self) -> tuple[str, str]:
        """(stdout text, stderr text) of a ``run``/``exec`` result, decoded."""
        out = getattr(self.value, "stdout", b"") or b""
        err = getattr(self.value, "stderr", b"") or b""
        return out.decode("utf-8", "replace"), err.decode("utf-8", "replace")

    def json_lines(self) -> list[str]:
        """``--format json``: one JSON object per line."""
        vals = self.value if isinstance(self.value, list) else [self.value]
        out = []
        for v in vals:
            if is_dataclass(v) and not isinstance(v, type):
                v = {k: x for k, x in asdict(v).items() if k not in ("image", "spec")}
            out.append(json.dumps(v, default=str, sort_keys=True))
        return out


class Face:
    """What a verb may ask of the face that runs it; this default answers quietly and never prompts.

    The CLI and the magics pass their own as ``args.face``: progress sinks that draw, and the
    terminal or the notebook for credentials. A verb never reads stdin nor writes stdout itself.
    """

    interactive = False  # may prompt for a username and a password

    def transfer_progress(self, mode: str) -> Callable[[Any], None] | None:
        """A sink for pull/push events; ``mode``: ``auto``, ``plain`` or ``tqdm``."""
        return None

    def kept_lines(self, sink: Any) -> list[str]:
        """The global lines (``Digest:``, ``Status:``) a sink kept instead of showing them."""
        return []

    def byte_progress(self, desc: str,
                      total: int | None) -> AbstractContextManager[Callable[[int], Any] | None]:
        """A context giving a callback for bytes done (or None) while save/load run."""
        return nullcontext(None)

    def read_stdin(self) -> str:
        raise InvalidArgumentError("there is no standard input to read here")

    def prompt(self, text: str, *, secret: bool = False) -> str:
        raise InvalidArgumentError("cannot prompt for credentials here (use -u with -p or --password-stdin)")

    def warn(self, text: str) -> None:
        """A warning for the person at the terminal (Docker's, e.g. about ``--password``)."""


def face_of(args: argparse.Namespace) -> Face:
    return getattr(args, "face", None) or Face()


@dataclass(frozen=True)
class Verb:
    """One verb of the grammar: its name, one line of help, its options and its call."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    call: Callable[[Any, argparse.Namespace], Result]

    def __call__(self, engine: Any, args: argparse.Namespace) -> Result:
        return self.call(engine, args)


def verb(name: str, help: str) -> Callable[[Callable[[argparse.ArgumentParser], None]], Any]:
    """``@verb(name, help)`` on the options function, then ``@options`` on the call: gives a :class:`Verb`."""

    def deco(configure: Callable[[argparse.ArgumentParser], None]) -> Callable[[Callable[..., Result]], Verb]:
        def bind(call: Callable[[Any, argparse.Namespace], Result]) -> Verb:
            return Verb(name, help, configure, call)

        return bind

    return deco


def build_parser(verbs: tuple[Verb, ...], prog: str = "nbcontainer") -> ArgumentParser:
    """The grammar of ``verbs``; :func:`nbcontainer.verbs.parser` builds it once per prog."""
    parser = ArgumentParser(prog=prog, description="Learn, run and analyse Linux containers.")
    _global_options(parser)
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=ArgumentParser)
    for v in verbs:
        # run/create use -h for --hostname, as Docker does; --help still works
        short_help = v.name not in ("run", "create")
        p = sub.add_parser(v.name, help=v.help, description=v.help, add_help=short_help)
        if not short_help:
            p.add_argument("--help", action="help", help="show this help message and exit")
        v.configure(p)
        if prog.startswith("%"):
            # the magics' own option; an option of the verb, so a container's arguments keep theirs
            p.add_argument("--out", metavar="NAME", help="also store the result in this variable")
    return parser


def verb_name(argv: list[str]) -> str | None:
    """The verb a command line names (after the global options), or None; parses nothing else."""
    pre = ArgumentParser(add_help=False)
    _global_options(pre)
    pre.add_argument("verb", nargs="?")
    pre.add_argument("rest", nargs=argparse.REMAINDER)
    try:
        return pre.parse_args(argv).verb
    except InvalidArgumentError:
        return None


def _global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", help="store root (default $NBCONTAINER_ROOT or /var/lib/nbcontainer)")
    parser.add_argument("--format", dest="output_format", choices=["table", "json"], default="table",
                        help="json: one JSON object per line")
