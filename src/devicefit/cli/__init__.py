"""The command-line interface: `devicefit COMMAND ...` (see `devicefit --help`)."""

from ._app import build_parser, main
from ._registry import COMMANDS, command

__all__ = ["COMMANDS", "build_parser", "command", "main"]
