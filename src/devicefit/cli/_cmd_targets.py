"""`devicefit targets ls|show`: the device targets (built in, table devices, user files)."""

from __future__ import annotations

import argparse

from ._output import Output
from ._registry import command


@command("targets")
class TargetsCommand:
    help = "list device targets and their budgets, or show one"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        ls = sub.add_parser("ls", help="list targets (add user targets with $DEVICEFIT_TARGETS=DIR of .toml files)")
        ls.add_argument("--kind", choices=("host", "mcu", "table"), help="only targets of this kind")
        show = sub.add_parser("show", help="every field of one target")
        show.add_argument("name")

    def run(self, args: argparse.Namespace, out: Output) -> int:
        from devicefit import hardware as H
        from devicefit.reports import format_bytes

        if args.action == "show":
            t = H.get_target(args.name)
            for key, value in t.to_dict().items():
                out.say(f"  {key:16s} {value}")
            out.set_result(target=t.to_dict())
            return 0
        targets = H.list_targets(args.kind)

        def budget(v: float | None, unit: str) -> str | None:
            return None if v is None else (format_bytes(v) if unit == "bytes" else f"{v:g} ms")

        out.table("targets (`devicefit targets show NAME` for the description)",
                  ["name", "kind", "runtime", "precisions", "latency", "SRAM", "flash", "model"],
                  [[t.name, t.kind, t.runtime, ",".join(t.precisions), budget(t.latency_ms, "ms"),
                    budget(t.peak_sram_bytes, "bytes"), budget(t.flash_bytes, "bytes"),
                    budget(t.model_bytes, "bytes")] for t in targets])
        out.set_result(targets=[t.to_dict() for t in targets])
        return 0
