"""Plain-text tables and number formatting for reports, READMEs and the CLI (no torch)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Column", "format_bytes", "format_count", "markdown_table"]


@dataclass(frozen=True)
class Column:
    """One table column: `key` into each row, a `header`, and a formatter for the value."""

    key: str
    header: str
    fmt: Callable[[Any], str] = str
    align: str = "left"


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    """A GitHub-flavoured Markdown table; a missing value prints as an em dash."""
    head = "| " + " | ".join(c.header for c in columns) + " |"
    rule = "|" + "|".join("---:" if c.align == "right" else "---" for c in columns) + "|"
    body = ["| " + " | ".join(_cell(row, c) for c in columns) + " |" for row in rows]
    return "\n".join([head, rule, *body]) + "\n"


def _cell(row: dict[str, Any], col: Column) -> str:
    value = row.get(col.key)
    return "—" if value is None else col.fmt(value).replace("|", "\\|")


def format_bytes(n: float) -> str:
    """Bytes with binary prefixes: 1536 → '1.5 KiB'."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_count(n: float) -> str:
    """Counts with SI suffixes: 12_500_000 → '12.50 M'."""
    value = float(n)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f}"
