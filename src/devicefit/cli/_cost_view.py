"""Shared by `models show` and `cost`: build an ArchSpec from flags and print its cost."""

from __future__ import annotations

import argparse
from pathlib import Path

from devicefit.core import ArchSpec, ConfigError, apply_overrides, read_json

from ._output import Output

__all__ = ["add_spec_args", "print_cost", "spec_from_args"]


def add_spec_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="zoo model name, a spec.json file, or a run directory")
    parser.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
                        help="override a model parameter, e.g. width_mult=0.5; repeatable")
    parser.add_argument("--input-shape", metavar="C,H,W", help="input shape, e.g. 1,49,10")
    parser.add_argument("--num-classes", type=int, help="number of classes")
    parser.add_argument("--weight-bits", type=int, default=8, help="bits per weight for param bytes (default 8)")
    parser.add_argument("--act-bits", type=int, default=8, help="bits per activation for peak memory (default 8)")


def spec_from_args(args: argparse.Namespace) -> ArchSpec:
    """A spec from a name (+ flags), a spec.json file, or a run directory's spec.json."""
    from devicefit import models as M

    path = Path(args.model)
    if path.is_dir():
        path = path / "spec.json"
    if path.suffix == ".json" or path.is_file():
        spec = ArchSpec.from_dict(read_json(path))
        return spec.replace(**apply_overrides({}, args.overrides)) if args.overrides else spec
    kwargs = apply_overrides({}, args.overrides)
    if args.input_shape:
        try:
            kwargs["input_shape"] = tuple(int(v) for v in args.input_shape.split(","))
        except ValueError:
            raise ConfigError(f"--input-shape must be C,H,W integers, got {args.input_shape!r}") from None
    if args.num_classes is not None:
        kwargs["num_classes"] = args.num_classes
    return M.default_spec(args.model, **kwargs)


def print_cost(spec: ArchSpec, args: argparse.Namespace, out: Output, *, layers: bool) -> None:
    from devicefit import models as M

    c = M.cost(spec, weight_bits=args.weight_bits, act_bits=args.act_bits)
    d = c.to_dict()
    out.say(f"[bold]{spec}[/]  (spec id {spec.spec_id})")
    out.say(f"  parameters            {c.params:,}")
    out.say(f"  MACs                  {c.macs:,}")
    out.say(f"  parameter bytes       {c.param_bytes:,} at {args.weight_bits}-bit weights")
    out.say(f"  peak activation bytes {c.peak_activation_bytes:,} at {args.act_bits}-bit activations, batch 1")
    if layers:
        out.table("layers", ["layer", "op", "output shape", "params", "MACs", "output bytes"],
                  [[r["name"], r["op"], "×".join(map(str, r["output_shape"])), f"{r['params']:,}",
                    f"{r['macs']:,}", f"{r['output_bytes']:,}"] for r in d.get("layers", [])])
    out.set_result(spec=spec.to_dict(), spec_id=spec.spec_id, cost=d)
