"""Docker's pull/push progress: events from the registry client, and two ways to show them.

The client emits :class:`ProgressEvent` values (``id`` is a layer's short digest, or "" for the
global lines: ``Pulling from``, ``Digest:``, ``Status:``, ``The push refers to``). A sink is any
callable taking one; :class:`LineProgress` prints Docker's plain lines, :class:`TqdmProgress` draws
one bar per layer. Events come from several download threads, so both sinks lock.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from nbcontainer.errors import InvalidArgumentError

__all__ = ["LineProgress", "Progress", "ProgressEvent", "TqdmProgress", "progress_sink"]


@dataclass(frozen=True)
class ProgressEvent:
    """One line of Docker's pull/push output: ``id`` is a short digest, or "" for global lines."""

    id: str
    status: str
    current: int = 0
    total: int = 0

    def line(self) -> str:
        text = f"{self.id}: {self.status}" if self.id else self.status
        if self.total and self.status in ("Downloading", "Extracting", "Pushing"):
            text += f" {_human(self.current)}/{_human(self.total)}"
        return text


Progress = Callable[[ProgressEvent], None]


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.3g}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1000
    return f"{n}"


class LineProgress:
    """Docker's plain output: one line per status change of a layer, plus the global lines."""

    _QUIET = ("Downloading", "Extracting", "Pushing")

    def __init__(self, file: IO[str] | None = None) -> None:
        self.file = file
        self._last: dict[str, str] = {}
        self._lock = threading.Lock()

    def __call__(self, event: ProgressEvent) -> None:
        with self._lock:
            if event.id and self._last.get(event.id) == event.status and event.status in self._QUIET:
                return
            self._last[event.id] = event.status
            out = self.file or sys.stdout
            print(event.line() if event.status not in self._QUIET else f"{event.id}: {event.status}",
                  file=out, flush=True)


class TqdmProgress:
    """One tqdm bar per layer (``tqdm.auto``: a widget in Jupyter, text elsewhere).

    The global lines are kept in :attr:`lines`; with ``write_lines`` they are also written above
    the bars. A notebook face turns that off and returns the lines as its value instead.
    """

    _BAR = ("Downloading", "Extracting", "Pushing")
    _DONE = ("Pull complete", "Already exists", "Pushed", "Layer already exists")

    def __init__(self, file: IO[str] | None = None, *, leave: bool = True, write_lines: bool = True) -> None:
        from tqdm.auto import tqdm

        self._tqdm = tqdm
        self.file = file
        self.leave = leave
        self.write_lines = write_lines
        self.lines: list[str] = []
        self._bars: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __call__(self, event: ProgressEvent) -> None:
        with self._lock:
            if not event.id or event.status.startswith("Pulling from"):
                self.lines.append(event.line())
                if self.write_lines:
                    self._tqdm.write(event.line(), file=self.file)
                return
            bar = self._bars.get(event.id)
            if bar is None:
                bar = self._tqdm(total=event.total or None, desc=f"{event.id}: {event.status}",
                                 unit="B", unit_scale=True, leave=self.leave, file=self.file)
                self._bars[event.id] = bar
            label = f"{event.id}: {event.status}"
            if bar.desc != label:
                bar.set_description_str(label, refresh=False)
            if event.status in self._BAR and event.total:
                if bar.total != event.total:
                    bar.reset(total=event.total)
                bar.update(event.current - bar.n)
            elif event.status in self._DONE or event.status.startswith("Mounted from"):
                if bar.total:
                    bar.update(bar.total - bar.n)
                bar.close()
            else:
                bar.refresh()


def progress_sink(progress: Any) -> Progress:
    """None (quiet), a callable taking :class:`ProgressEvent`, or a text stream for Docker's lines."""
    if progress is None:
        return lambda event: None
    if hasattr(progress, "write") and not callable(progress):
        return LineProgress(progress)
    if callable(progress):
        return progress
    raise InvalidArgumentError("progress must be None, a callable or a text stream")
