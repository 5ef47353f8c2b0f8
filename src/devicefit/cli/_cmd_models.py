"""`devicefit models ls|show`: the model zoo and one model's spec, cost and layers."""

from __future__ import annotations

import argparse

from ._cost_view import add_spec_args, print_cost, spec_from_args
from ._output import Output
from ._registry import command


@command("models")
class ModelsCommand:
    help = "list the model zoo or show one model's spec, cost and layers"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("ls", help="list registered models with their cost at default settings")
        show = sub.add_parser("show", help="spec, cost and per-layer table of one model")
        add_spec_args(show)

    def run(self, args: argparse.Namespace, out: Output) -> int:
        from devicefit import models as M

        if args.action == "show":
            spec = spec_from_args(args)
            print_cost(spec, args, out, layers=True)
            return 0
        rows, result = [], []
        for entry in M.list_models():
            spec = M.default_spec(entry.name)
            c = M.cost(spec)
            rows.append([entry.name, entry.description, f"{c.params:,}", f"{c.macs:,}",
                         f"{c.peak_activation_bytes:,}"])
            result.append({"name": entry.name, "spec": spec.to_dict(), **c.to_dict()})
        out.table("models (defaults: 10 classes, 3×32×32 unless noted; int8 bytes)",
                  ["name", "description", "params", "MACs", "peak act. bytes"], rows)
        out.set_result(models=result)
        return 0
