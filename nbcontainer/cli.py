"""``nbcontainer [--root DIR] VERB …``: Docker-like tables, ``-q`` ids, ``--format json`` lines."""

from __future__ import annotations

import sys

from .commands import HelpShown, build_parser, run
from .errors import NbContainerError


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        from .engine import Engine

        engine = Engine(args.root)
        result = run(engine, args)
    except HelpShown:
        return 0
    except NbContainerError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if result.kind == "none":
        return int(getattr(result, "exit_code", 0) or 0)
    if args.output_format == "json":
        for line in result.json_lines():
            print(line)
    else:
        text = result.text()
        if text:
            print(text)
    return int(getattr(result, "exit_code", 0) or 0)


if __name__ == "__main__":
    sys.exit(main())
