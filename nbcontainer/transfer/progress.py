"""Docker's pull/push progress as data: the events the registry client emits.

The client emits :class:`ProgressEvent` values (``id`` is a layer's short digest, or "" for the
global lines: ``Pulling from``, ``Digest:``, ``Status:``, ``The push refers to``) to a sink, any
callable taking one. Moving images never prints: the faces bring sinks that draw
(:mod:`nbcontainer.cli.progress`: Docker's plain lines or one tqdm bar per layer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from nbcontainer.errors import InvalidArgumentError

__all__ = ["Progress", "ProgressEvent", "human", "progress_sink"]


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
            text += f" {human(self.current)}/{human(self.total)}"
        return text


Progress = Callable[[ProgressEvent], None]


def human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.3g}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1000
    return f"{n}"


def progress_sink(progress: Progress | None) -> Progress:
    """None (quiet) or a callable taking :class:`ProgressEvent`."""
    if progress is None:
        return lambda event: None
    if callable(progress):
        return progress
    raise InvalidArgumentError("progress must be None or a callable taking a ProgressEvent")
