"""`devicefit search`: constrained architecture search on a table-backed space (NAS-Bench-201) through a stored
optuna study, with a progress bar and a JSON record of every evaluated candidate."""

from __future__ import annotations

import argparse
from pathlib import Path

from devicefit.core import UnsupportedOpError

from ._output import Output
from ._registry import command


@command("search")
class SearchCommand:
    help = "hardware-aware NAS under a latency budget (tabular spaces: accuracy and latency by table lookup)"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--space", default="nb201", help="search space (default nb201)")
        parser.add_argument("--target", required=True, help="a table target such as nb201-pixel2, or a column")
        parser.add_argument("--latency-ms", type=float, required=True, help="latency budget in ms")
        parser.add_argument("--method", default="hsconas", help="hsconas | evolution | random (default hsconas)")
        parser.add_argument("--n-trials", type=int, default=100, help="evaluated architectures (default 100)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--dataset", default="cifar10", help="accuracy column: cifar10, cifar100, "
                                                                 "imagenet16_120")
        parser.add_argument("--data-dir", help="folder with the full nas-hw-benchmarks tables (default: "
                                               "$DEVICEFIT_DATA_DIR, else the bundled slice)")
        parser.add_argument("--storage", help="optuna storage: SQLite path or database URL (default OUT.db)")
        parser.add_argument("--study-name", help="study name (default derived from the settings)")
        parser.add_argument("--out", default="search.json", help="JSON record of the search (default search.json)")

    def run(self, args: argparse.Namespace, out: Output) -> int:
        from devicefit.pipelines._search_job import SearchJobConfig

        if args.method == "lightnas" or args.space.startswith("mbconv"):
            raise UnsupportedOpError(
                f"the CLI searches table-backed spaces with hsconas/evolution/random; {args.space!r} with "
                f"{args.method!r} needs supernet training, available from Python (devicefit.search.LightNAS, "
                "devicefit.space.MBConvSupernet) and not yet wired into this command")
        cfg = SearchJobConfig(space=args.space, target=args.target, latency_ms=args.latency_ms, method=args.method,
                              n_trials=args.n_trials, seed=args.seed, dataset=args.dataset, data_dir=args.data_dir,
                              storage=args.storage, study_name=args.study_name)
        _, record = _run_with_progress(cfg, Path(args.out), out)
        best = record["best"]
        if best is None:
            out.say(f"no evaluated architecture met {cfg.latency_ms} ms")
        else:
            m = best["metrics"]
            out.say(f"best: {m['accuracy']:.2f}% at {m['latency_ms']:.4g} ms (budget {cfg.latency_ms:g} ms); "
                    f"oracle {record['oracle']['accuracy']:.2f}% (gap {record['gap_to_oracle']:.2f} points)")
        out.say(f"{record['n_evaluated']} candidates recorded in {args.out} (study {record['study_name']!r} "
                f"in {record['storage']})")
        out.set_result(**{k: v for k, v in record.items() if k != "evaluated"}, out=str(args.out))
        return 0


def _run_with_progress(cfg: object, out_path: Path, out: Output) -> tuple[object, dict]:
    from devicefit.pipelines._search_job import run_search_job

    if not out.progress:
        return run_search_job(cfg, out_path)  # type: ignore[arg-type]
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task("search", total=cfg.n_trials)  # type: ignore[attr-defined]
        return run_search_job(cfg, out_path, on_trial=lambda e: bar.advance(task))  # type: ignore[arg-type]
