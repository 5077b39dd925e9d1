"""IPython magics: ``%container VERB …``, ``%commit …``, ``%history IMAGE``, ``%%container run IMAGE``.

Each magic parses with the CLI's grammar, makes one Engine call and returns a value: a DataFrame
for tables, a :class:`Output` (with ``_repr_html_``) for the rest. ``--out NAME`` also stores the
value in the user namespace. Any :class:`NbContainerError` becomes one ``UsageError`` line.
"""

from __future__ import annotations

import argparse
import html
import re
import shlex
import sys
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand

from nbcontainer import verbs
from nbcontainer.analysis import frames
from nbcontainer.errors import NbContainerError, disk_full
from nbcontainer.verbs import HelpShown, Result
from nbcontainer.verbs.containers import options

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
        out, err = result.output()
        if err:
            sys.stderr.write(err)
        return Output(out.rstrip("\n").splitlines(), result.value)
    if result.kind == "stream":  # logs -f: text as it comes (a kernel's streams take str, not bytes)
        for stream, data in result.value:
            target = sys.stdout if stream == "stdout" else sys.stderr
            target.write(data.decode("utf-8", "replace"))
            target.flush()
        return None
    return Output(result.lines, result.value)


def _usage_error(err: NbContainerError | OSError) -> BaseException:
    """One line for the person at the notebook; any OS error but a full disk stays a traceback."""
    if isinstance(err, NbContainerError):
        return UsageError(str(err))
    full = disk_full(err)
    return UsageError(full) if full is not None else err


def _split(line: str, prog: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as err:
        raise UsageError(f"{prog}: {err}") from None


def _shell_ns(shell: Any) -> dict[str, Any]:
    if shell is None:
        raise UsageError("--out needs an IPython shell")
    ns: dict[str, Any] = shell.user_ns
    return ns


class NotebookFace:
    """The magics' answers to a verb: one tqdm bar per layer whose global lines become the cell's
    value, byte bars as widgets, prompts through the notebook's input boxes, no warnings."""

    interactive = True

    def transfer_progress(self, mode: str) -> Any:
        from nbcontainer.cli.progress import LineProgress, TqdmProgress

        return LineProgress(sys.stdout) if mode == "plain" else TqdmProgress(write_lines=False)

    def kept_lines(self, sink: Any) -> list[str]:
        return list(getattr(sink, "lines", []))

    def byte_progress(self, desc: str, total: int | None) -> Any:
        from nbcontainer.cli.progress import byte_bar

        return byte_bar(desc, total)

    def read_stdin(self) -> str:
        raise NbContainerError("a notebook has no standard input: use -p or a prompt")

    def prompt(self, text: str, *, secret: bool = False) -> str:
        if secret:
            import getpass

            return getpass.getpass(text)
        return input(text)

    def warn(self, text: str) -> None:
        """Docker's terminal warnings say nothing useful in a notebook."""


@magics_class
class ContainerMagics(Magics):
    def __init__(self, shell: Any, engine: Any = None) -> None:
        super().__init__(shell)
        self._engine = engine
        self._ipython_history = shell.find_line_magic("history") if shell else None

    @property
    def engine(self) -> Any:
        if self._engine is None:
            from nbcontainer.engine import Engine

            self._engine = Engine()
        return self._engine

    def _call(self, argv: list[str], prog: str = "%container") -> Any:
        parser = verbs.parser(prog)
        try:
            args = parser.parse_args(argv)
            out = getattr(args, "out", None)
            engine = self.engine
            if args.root:
                from nbcontainer.engine import Engine

                engine = Engine(args.root)
            args.face = NotebookFace()
            result = verbs.call(engine, args)
        except HelpShown:
            return None
        except (NbContainerError, OSError) as err:
            raise _usage_error(err) from None
        value = present(result)
        if out:
            self._user_ns()[out] = value
        if args.verb == "diff":
            from nbcontainer.notebook.widgets import DiffView

            # the DataFrame goes to --out; the cell shows the tree of the same rows
            return DiffView(engine, args.container, rows=result.value)
        return value

    @no_var_expand
    @line_magic
    def container(self, line: str) -> Any:
        """``%container VERB [options]`` — the CLI's verbs; see ``%container --help``."""
        argv = _split(line, "%container")
        return self._call(argv)

    def _user_ns(self) -> dict[str, Any]:
        return _shell_ns(self.shell)

    @cell_magic("container")  # type: ignore[arg-type]  # IPython types the named form as taking nothing
    def container_cell(self, line: str, cell: str) -> Any:
        """``%%container run [opts] IMAGE``: run the cell as a shell script in a new container."""
        argv = _split(line, "%%container")
        if not argv or argv[0] != "run":
            raise UsageError("%%container: only 'run [options] IMAGE' is supported as a cell magic")
        parser = verbs.parser("%%container")
        try:
            args = parser.parse_args(argv)
            out = getattr(args, "out", None)
            value = run_cell(self.engine, args, cell)
        except HelpShown:
            return None
        except (NbContainerError, OSError) as err:
            raise _usage_error(err) from None
        if out:
            self._user_ns()[out] = value
        return value

    @no_var_expand
    @line_magic
    def commit(self, line: str) -> Any:
        """``%commit [-m MSG] [-c INSTR] CONTAINER [REPO[:TAG]]``."""
        argv = _split(line, "%commit")
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


def run_cell(engine: Any, a: argparse.Namespace, cell: str) -> Any:
    """``%%container run IMAGE``: the cell runs as ``/bin/sh -c CELL``; output streams as it comes."""
    opts = options(a)
    opts["stdin"] = None
    s = engine.create(a.image, ["/bin/sh", "-c", cell], **opts)
    try:  # from start on, an interrupt stops the container
        engine.start(s.id)
        for stream, data in engine.logs(s.id, follow=True):
            out = sys.stdout if stream == "stdout" else sys.stderr
            out.write(data.decode("utf-8", "replace"))
            out.flush()
        code = engine.wait(s.id)
    except KeyboardInterrupt:
        engine.stop(s.id, timeout=1)
        code = 130
    finally:
        if a.remove:
            engine.rm(s.id, force=True)
    if code:
        print(f"container exited with code {code}", file=sys.stderr)
    return None


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
    from nbcontainer.runtime.host import probe

    ipython.register_magics(ContainerMagics(ipython))
    print(probe().summary())
