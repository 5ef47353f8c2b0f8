"""`devicefit cost`: analytic parameters, MACs, parameter bytes and peak activation memory."""

from __future__ import annotations

import argparse

from ._cost_view import add_spec_args, print_cost, spec_from_args
from ._output import Output
from ._registry import command


@command("cost")
class CostCommand:
    help = "analytic cost of a model: parameters, MACs, parameter bytes, peak activation memory"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        add_spec_args(parser)
        parser.add_argument("--layers", action="store_true", help="also print the per-layer table")

    def run(self, args: argparse.Namespace, out: Output) -> int:
        print_cost(spec_from_args(args), args, out, layers=args.layers)
        return 0
