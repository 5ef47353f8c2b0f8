"""The command registry: a subcommand is one module with one `@command` class."""

from __future__ import annotations

import argparse
from typing import Protocol

from devicefit.core import Registry

from ._output import Output

__all__ = ["COMMANDS", "Command", "command"]


class Command(Protocol):
    """A subcommand: `configure` adds its arguments, `run` does the work and returns an exit code."""

    help: str

    def configure(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace, out: Output) -> int: ...


COMMANDS: Registry[type] = Registry("command")


def command(name: str):  # type: ignore[no-untyped-def]
    """Class decorator registering a subcommand under `name`."""
    return COMMANDS.register(name)
