"""The command-line face: ``nbcontainer [--root DIR] [--format json] VERB …``.

Parses with the shared grammar (:mod:`nbcontainer.verbs`), makes the Engine call, renders the typed
result as Docker does (tables, ids, JSON lines), and maps errors to one line and an exit code.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from nbcontainer.errors import NbContainerError, disk_full

if TYPE_CHECKING:
    from nbcontainer.verbs import Result

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    from nbcontainer import verbs

    parser = verbs.parser_for(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
        from nbcontainer.engine import Engine

        engine = Engine(args.root)
        args.face = TerminalFace()
        if (args.verb in ("run", "exec") and getattr(args, "interactive", False)
                and not sys.stdin.isatty()):
            args.stdin_data = sys.stdin.buffer.read()
        if (args.verb == "run" and args.interactive and args.tty and not args.detach
                and sys.stdin.isatty()):
            from nbcontainer.cli.terminal import run_interactive

            return run_interactive(engine, args)
        result = verbs.call(engine, args)
        if result.kind == "stream":
            for stream, data in result.value:
                target = sys.stdout if stream == "stdout" else sys.stderr
                target.buffer.write(data)
                target.flush()
            return 0
    except verbs.HelpShown:
        return 0
    except NbContainerError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        line = disk_full(err)
        if line is None:
            raise
        print(f"Error: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if result.kind == "none":
        return result.exit_code
    if args.output_format == "json":
        for line in result.json_lines():
            print(line)
    else:
        text = render(result)
        if text:
            print(text)
    return result.exit_code


class TerminalFace:
    """The CLI's answers to a verb: Docker's plain progress lines (or tqdm bars on request), byte
    bars on the terminal, prompts and warnings on the terminal."""

    @property
    def interactive(self) -> bool:
        return sys.stdin.isatty()

    def transfer_progress(self, mode: str) -> Any:
        from nbcontainer.cli.progress import LineProgress, TqdmProgress

        return TqdmProgress() if mode == "tqdm" else LineProgress(sys.stdout)

    def kept_lines(self, sink: Any) -> list[str]:
        return []  # written as they came

    def byte_progress(self, desc: str, total: int | None) -> Any:
        from nbcontainer.cli.progress import byte_bar

        return byte_bar(desc, total)

    def read_stdin(self) -> str:
        return sys.stdin.read()

    def prompt(self, text: str, *, secret: bool = False) -> str:
        if secret:
            import getpass

            return getpass.getpass(text)
        return input(text)

    def warn(self, text: str) -> None:
        print(text, file=sys.stderr)


def render(result: Result) -> str:
    """The text of a result as Docker prints it (``run``'s stderr goes straight to stderr)."""
    from nbcontainer.cli.text import table

    if result.kind == "table":
        return table(result.columns, result.rows)
    if result.kind == "json":
        return json.dumps(result.value, indent=4, default=str)
    if result.kind == "run":
        out, err = result.output()
        if err:
            sys.stderr.write(err)
        return out.rstrip("\n")
    return "\n".join(result.lines)


if __name__ == "__main__":
    sys.exit(main())
