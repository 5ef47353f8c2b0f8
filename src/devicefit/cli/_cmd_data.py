"""`devicefit data ls|prepare`: list datasets, and load (download, decode, cache) one."""

from __future__ import annotations

import argparse

from ._output import Output
from ._registry import command


@command("data")
class DataCommand:
    help = "list datasets or prepare one (decode and cache; --download fetches official files)"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("ls", help="list registered datasets")
        prep = sub.add_parser("prepare", help="load a dataset once so it is decoded and cached")
        prep.add_argument("name")
        prep.add_argument("--data-dir", help="folder holding full copies (default: $DEVICEFIT_DATA_DIR, "
                                             "else the bundled subset)")
        prep.add_argument("--download", action="store_true", help="download the official files into --data-dir")

    def run(self, args: argparse.Namespace, out: Output) -> int:
        from devicefit import data as D

        if args.action == "ls":
            infos = D.list_datasets()
            out.table("datasets (`devicefit data prepare NAME` shows sources, counts and licence)",
                      ["name", "input (C,H,W)", "classes", "augment", "description"],
                      [[i.name, "×".join(map(str, i.input_shape)) if all(i.input_shape) else "any",
                        i.num_classes or "any", i.augment, i.description] for i in infos])
            out.set_result(datasets=[{"name": i.name, "input_shape": list(i.input_shape),
                                      "num_classes": i.num_classes, "license": i.license} for i in infos])
            return 0
        summary = D.prepare(args.name, args.data_dir, download=args.download)
        out.say(f"[bold]{args.name}[/]: {summary.get('source')}")
        for key in ("description", "license", "data_dir", "cache_dir"):
            out.say(f"  {key}: {summary.get(key)}")
        for split, info in summary.get("splits", {}).items():
            counts = ", ".join(f"{k}: {v}" for k, v in info.get("class_counts", {}).items())
            out.say(f"  {split}: {info.get('count')} examples, shape {info.get('shape')} {info.get('dtype')}; "
                    f"per class {counts}")
        out.set_result(**summary)
        return 0
