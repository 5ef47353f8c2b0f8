"""Argument parsing, dispatch and exit codes: 0 ok, 2 a devicefit error (bad input, config,
data), 3 a run whose model misses a budget, 130 interrupted; anything else is a bug and keeps its traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from devicefit import __version__
from devicefit.core import DevicefitError

from . import (  # noqa: F401  (registration)
    _cmd_adapt,
    _cmd_compress,
    _cmd_cost,
    _cmd_data,
    _cmd_deploy,
    _cmd_eval,
    _cmd_llm,
    _cmd_models,
    _cmd_predictor,
    _cmd_profile,
    _cmd_run,
    _cmd_search,
    _cmd_targets,
    _cmd_train,
)
from ._output import Output, error
from ._registry import COMMANDS

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="devicefit", description="Fit deep neural networks to embedded devices.",
                                     epilog="-q/--quiet and --json may also be given after the command.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    mode.add_argument("--json", action="store_true", help="print one JSON document with the result")
    parser.add_argument("--version", action="version", version=f"devicefit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS.names():
        cmd = COMMANDS.get(name)()
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        cmd.configure(p)
        p.set_defaults(_command=cmd)
    return parser


_MODE_FLAGS = ("-q", "--quiet", "--json")


def _hoist_mode_flags(argv: Sequence[str]) -> list[str]:
    """Move -q/--quiet/--json to the front so they work after (sub)commands too."""
    argv = list(argv)
    stop = argv.index("--") if "--" in argv else len(argv)
    flags = [a for a in argv[:stop] if a in _MODE_FLAGS]
    return flags + [a for i, a in enumerate(argv) if not (i < stop and a in _MODE_FLAGS)]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(_hoist_mode_flags(sys.argv[1:] if argv is None else argv))
    out = Output(quiet=args.quiet, json_mode=args.json)
    try:
        code = int(args._command.run(args, out))
    except DevicefitError as e:
        error(str(e))
        return 2
    except KeyboardInterrupt:
        error("interrupted; rerun the same command to resume")
        return 130
    out.finish()
    return code


if __name__ == "__main__":
    sys.exit(main())
