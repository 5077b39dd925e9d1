"""``run -it`` in a terminal: create, attach to the container's pty, start, relay in raw mode."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from nbcontainer.verbs.containers import options


def run_interactive(engine: Any, a: argparse.Namespace) -> int:
    """``run -it`` in a terminal: create, attach to the container's pty, start, relay in raw mode."""
    import os
    import select
    import shutil
    import termios
    import tty

    opts = options(a)
    size = shutil.get_terminal_size()
    s = engine.create(a.image, a.command or None, attach=True, tty_size=(size.lines, size.columns), **opts)
    sock = engine.attach(s.id)
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        engine.start(s.id)
        watch: list[Any] = [fd, sock]
        while True:
            ready, _, _ = select.select(watch, [], [])
            if sock in ready:
                data = sock.recv(65536)
                if not data:
                    break
                os.write(sys.stdout.fileno(), data)
            if fd in ready:
                typed = os.read(fd, 65536)
                if typed:
                    sock.sendall(typed)
                else:
                    watch.remove(fd)  # our stdin ended; keep showing output until the container ends
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        sock.close()
    code = engine.wait(s.id)
    if a.remove:
        engine.rm(s.id, force=True)
    return code
