"""Text tables as Docker's tabwriter prints them (the CLI face)."""

from __future__ import annotations


def table(columns: list[str], rows: list[list[str]]) -> str:
    """Columns left-aligned and padded by three spaces, as Docker's tabwriter prints them."""
    widths = [len(c) for c in columns]
    for r in rows:
        for i, cell in enumerate(r):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for r in [columns, *rows]:
        cells = [cell.ljust(widths[i]) if i < len(r) - 1 else cell for i, cell in enumerate(r)]
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines)
