"""`devicefit run RECIPE` (the main job) and `devicefit report RUN_DIR` (rebuild its report, no torch)."""

from __future__ import annotations

import argparse
import json

from ._output import Output
from ._registry import command


@command("run")
class RunCommand:
    help = "run a recipe end to end: zoo baseline → search → compress → deploy → verify budgets → report"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("recipe", nargs="?", help="recipe TOML (default: built-in defaults)")
        parser.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
                            help="override one recipe key (dotted, e.g. train.epochs=5); repeatable")
        parser.add_argument("--data-dir", help="folder with full dataset copies (default: $DEVICEFIT_DATA_DIR, "
                                               "else the bundled subset)")
        parser.add_argument("--run-dir", help="output folder (default: runs/<recipe name>)")

    def run(self, args: argparse.Namespace, out: Output) -> int:
        from devicefit.pipelines import load_recipe, run_recipe

        extra = [f"data.data_dir={json.dumps(args.data_dir)}"] if args.data_dir else []
        recipe = load_recipe(args.recipe, [*extra, *args.overrides])
        summary = run_recipe(recipe, progress=out.progress, echo=out.say if out.progress else None,
                             run_dir=args.run_dir)
        if "search" in summary:
            c, spec = summary["search"]["comparison"], summary["search"]["searched_spec"]
            arch = ", ".join(f"{k}={v}" for k, v in spec["params"].items() if k in ("depths", "channels"))
            out.say(f"search: {spec['family']}({arch}) test {100 * c['search']['test_accuracy']:.2f}% (val "
                    f"{100 * c['search']['val_accuracy']:.2f}%) vs zoo {c['zoo']['name']} test "
                    f"{100 * c['zoo']['test_accuracy']:.2f}% (val {100 * c['zoo']['val_accuracy']:.2f}%); kept: "
                    f"{'searched model' if summary['search']['kept'] == 'search' else 'zoo model'}")
        if "budgets" in summary:
            out.say(f"\n[bold]{recipe.name}[/]: test accuracy {100 * summary['test_accuracy']:.2f}% "
                    f"({summary['final']['precision']}, from the {summary['final']['source']} stage)")
            for target, b in summary["budgets"].items():
                for x in b["lines"]:
                    if x["value"] is None:
                        out.say(f"  {target:16s} {x['name']:16s} not measured")
                        continue
                    mark = "[green]met[/]" if x["met"] else "[red]OVER[/]"
                    out.say(f"  {target:16s} {x['name']:16s} {_fmt(x['name'], x['value']):>10s} of "
                            f"{_fmt(x['name'], x['limit']):<10s} {mark} ({100 * x['margin']:+.0f}% margin)")
            out.say("verdict: " + ("every budget met" if summary["all_met"] else "[red]not every budget met[/]"))
        if "report" in summary:
            out.say(f"report: {summary['report']}")
        out.set_result(**summary)
        return 0 if summary.get("all_met", True) else 3


def _fmt(name: str, value: float) -> str:
    from devicefit.reports import format_bytes

    return format_bytes(int(value)) if name.endswith("_bytes") else f"{value:.3g} ms"


@command("report")
class ReportCommand:
    help = "rebuild report.html and report.md of a `devicefit run` directory (needs no torch)"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run_dir", help="a directory written by `devicefit run`")

    def run(self, args: argparse.Namespace, out: Output) -> int:
        from devicefit.reports import write_run_report

        paths = write_run_report(args.run_dir)
        out.say(f"report: {paths['html']}\nsummary: {paths['markdown']}")
        out.set_result(**paths)
        return 0
