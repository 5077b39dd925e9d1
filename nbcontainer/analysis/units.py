"""Docker's units, pure: human sizes, "5 minutes ago", short ids, truncated commands (used by every face)."""

from __future__ import annotations

import datetime as _dt


def human_size(n: float) -> str:
    """Docker's ``units.HumanSize``: decimal units, 3 significant digits (``1.23MB``)."""
    if n is None:
        return ""
    units = ["B", "kB", "MB", "GB", "TB", "PB"]
    i = 0
    n = float(n)
    while n >= 1000 and i < len(units) - 1:
        n /= 1000.0
        i += 1
    return f"{n:.4g}{units[i]}"


def since(t: _dt.datetime | None, now: _dt.datetime | None = None) -> str:
    """Docker's ``units.HumanDuration(now - t) + " ago"``."""
    if t is None:
        return "N/A"
    now = now or _dt.datetime.now(_dt.UTC)
    s = (now - t).total_seconds()
    if s < 1:
        return "Less than a second ago"
    if s < 2:
        return "1 second ago"
    if s < 60:
        return f"{int(s)} seconds ago"
    m = s / 60
    if m < 2:
        return "About a minute ago"
    if m < 60:
        return f"{int(m)} minutes ago"
    h = m / 60
    if h < 1.5:
        return "About an hour ago"
    if h < 48:
        return f"{round(h)} hours ago"
    d = h / 24
    if d < 14:
        return f"{int(d)} days ago"
    if d < 60:
        return f"{int(d / 7)} weeks ago"
    if d < 365 * 2:
        return f"{int(d / 30)} months ago"
    return f"{int(d / 365)} years ago"


def short_id(value: str) -> str:
    if value.startswith("sha256:"):
        return value[7:19]
    return value[:12]


def trunc(text: str, n: int) -> str:
    """Docker's ``stringutils.Ellipsis``."""
    return text if len(text) <= n else text[: n - 1] + "…"
