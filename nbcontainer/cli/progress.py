"""Progress drawn by the faces: Docker's plain pull/push lines, a tqdm bar per layer, a bytes bar.

``tqdm.auto`` gives a widget in Jupyter and text in a terminal, so the notebook face uses these too.
Events come from several download threads, so the sinks lock.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

from nbcontainer.transfer.progress import ProgressEvent

__all__ = ["LineProgress", "TqdmProgress", "byte_bar"]


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


@contextmanager
def byte_bar(desc: str, total: int | None) -> Iterator[Callable[[int], Any] | None]:
    """A tqdm bar in bytes for long work (nothing for work under 8 MB or of unknown size)."""
    if not total or total <= (8 << 20):
        yield None
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="B", unit_scale=True, desc=desc, leave=False)
    try:
        yield bar.update
    finally:
        bar.close()
