"""IPython magics: ``%container VERB …``, ``%commit …``, ``%history IMAGE``, ``%%container run IMAGE``.

Each magic parses with the CLI's grammar, makes one Engine call and returns a value: a DataFrame
for tables, a :class:`Output` (with ``_repr_html_``) for the rest. ``--out NAME`` also stores the
value in the user namespace. Any :class:`NbContainerError` becomes one ``UsageError`` line.
"""

from __future__ import annotations

import html
import re
import shlex
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand

from . import frames
from .commands import HelpShown, Result, build_parser, run
from .errors import NbContainerError

_RANGE = re.compile(r"^[\d\s~/:\-]*$")


class Output:
    """Lines of text plus the typed value behind them (``.value``)."""

    def __init__(self, lines: list[str], value: Any) -> None:
        self.lines = lines
        self.value = value

    def __repr__(self) -> str:
        return "\n".join(self.lines)

    def _repr_html_(self) -> str:
        return "<pre>" + html.escape("\n".join(self.lines)) + "</pre>"


def _split_out(argv: list[str]) -> tuple[list[str], str | None]:
    """Take ``--out NAME`` (anywhere before the image's own arguments) out of argv."""
    out = None
    rest: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--out" and i + 1 < len(argv):
            out = argv[i + 1]
            i += 2
            continue
        if argv[i].startswith("--out="):
            out = argv[i].split("=", 1)[1]
            i += 1
            continue
        rest.append(argv[i])
        i += 1
    return rest, out


def present(result: Result) -> Any:
    """The value a magic returns for a verb's result."""
    if result.frame:
        return frames.to_frame(result.frame, result.value)
    if result.kind == "json":
        return result.value
    if result.kind == "table":
        return frames.generic(result.value)
    if result.kind == "none":
        return None
    if result.kind == "run":
        return Output(result.text().splitlines(), result.value)
    return Output(result.lines, result.value)


@magics_class
class ContainerMagics(Magics):
    def __init__(self, shell: Any, engine: Any = None) -> None:
        super().__init__(shell)
        self._engine = engine
        self._ipython_history = shell.find_line_magic("history") if shell else None

    @property
    def engine(self) -> Any:
        if self._engine is None:
            from .engine import Engine

            self._engine = Engine()
        return self._engine

    def _call(self, argv: list[str], prog: str = "%container") -> Any:
        argv, out = _split_out(argv)
        parser = build_parser(prog)
        try:
            args = parser.parse_args(argv)
            engine = self.engine
            if args.root:
                from .engine import Engine

                engine = Engine(args.root)
            result = run(engine, args)
        except HelpShown:
            return None
        except NbContainerError as err:
            raise UsageError(str(err)) from None
        value = present(result)
        if out:
            self.shell.user_ns[out] = value
        if args.verb == "diff":
            from .widgets import DiffView

            # the DataFrame goes to --out; the cell shows the tree of the same rows
            return DiffView(engine, args.container, rows=result.value)
        return value

    @no_var_expand
    @line_magic
    def container(self, line: str) -> Any:
        """``%container VERB [options]`` — the CLI's verbs; see ``%container --help``."""
        try:
            argv = shlex.split(line)
        except ValueError as err:
            raise UsageError(f"%container: {err}") from None
        return self._call(argv)

    @cell_magic("container")
    def container_cell(self, line: str, cell: str) -> Any:
        """``%%container run [opts] IMAGE``: run the cell as a shell script in a new container."""
        try:
            argv = shlex.split(line)
        except ValueError as err:
            raise UsageError(f"%%container: {err}") from None
        if not argv or argv[0] != "run":
            raise UsageError("%%container: only 'run [options] IMAGE' is supported as a cell magic")
        argv, out = _split_out(argv)
        parser = build_parser("%%container")
        try:
            args = parser.parse_args(argv)
            from .commands_containers import run_cell

            value = run_cell(self.engine, args, cell)
        except HelpShown:
            return None
        except NbContainerError as err:
            raise UsageError(str(err)) from None
        if out:
            self.shell.user_ns[out] = value
        return value

    @no_var_expand
    @line_magic
    def commit(self, line: str) -> Any:
        """``%commit [-m MSG] [-c INSTR] CONTAINER [REPO[:TAG]]``."""
        try:
            argv = shlex.split(line)
        except ValueError as err:
            raise UsageError(f"%commit: {err}") from None
        return self._call(["commit", *argv], prog="%commit")

    @line_magic
    def history(self, line: str) -> Any:
        """``%history IMAGE`` shows an image's history; any other use is IPython's ``%history``."""
        try:
            argv = shlex.split(line)
        except ValueError:
            argv = []
        if not _names_an_image(argv):
            return self._ipython_history(line) if self._ipython_history else None
        return self._call(["history", *argv], prog="%history")


def _names_an_image(argv: list[str]) -> bool:
    """True when ``%history`` got an image: a word that is no range and no value of -f/-g/-l."""
    takes_value = {"-f", "-g", "-l"}
    prev = ""
    for word in argv:
        if word in ("--no-trunc", "-q", "--human", "--no-human"):
            return True
        if not word.startswith("-") and prev not in takes_value and not _RANGE.match(word):
            return True
        prev = word
    return False


def load_ipython_extension(ipython: Any) -> None:
    from .host import probe

    ipython.register_magics(ContainerMagics(ipython))
    print(probe().summary())
