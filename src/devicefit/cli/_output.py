"""Terminal output for commands: rich tables for people, one JSON document with `--json`,
nothing but errors with `--quiet`."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Output"]


@dataclass
class Output:
    """Where a command writes. In JSON mode `result` is printed once, at the end."""

    quiet: bool = False
    json_mode: bool = False
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def progress(self) -> bool:
        """Whether long work may draw progress bars (never in quiet or JSON mode)."""
        return not (self.quiet or self.json_mode)

    def say(self, text: str) -> None:
        if self.progress:
            from rich.console import Console

            Console(highlight=False).print(text)

    def table(self, title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if not self.progress:
            return
        from rich.console import Console
        from rich.table import Table

        t = Table(title=title, title_justify="left")
        for i, h in enumerate(headers):
            t.add_column(h, no_wrap=i < len(headers) - 1)
        for r in rows:
            t.add_row(*("—" if v is None else str(v) for v in r))
        console = Console()
        if not console.is_terminal:  # piped: don't squeeze tables into 80 columns
            console = Console(width=200)
        console.print(t)

    def set_result(self, **items: Any) -> None:
        self.result.update(items)

    def finish(self) -> None:
        if self.json_mode:
            json.dump(self.result, sys.stdout, indent=2, sort_keys=True, default=str)
            sys.stdout.write("\n")


def error(message: str) -> None:
    sys.stderr.write(f"devicefit: error: {message}\n")
