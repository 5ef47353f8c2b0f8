"""`devicefit search`: constrained architecture search on a table-backed space (NAS-Bench-201) through a stored
optuna study; on an MBConv space against a host target's measured latency, a supernet search (hsconas,
evolution, random: latency model, supernet, study, channel scaling, the chosen network timed) or LightNAS
(`--method lightnas`); each with a progress bar and a JSON record of every evaluated candidate."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from devicefit.core import ConfigError

from ._output import Output
from ._registry import command


@command("search")
class SearchCommand:
    help = ("hardware-aware NAS under a latency budget: table spaces by lookup (hsconas, evolution, random); "
            "supernet spaces (mbconv) against a host target's measured latency (hsconas, evolution, random, "
            "lightnas)")

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--space", default=None,
                            help="search space: nb201 (table lookup), mbconv or mbconv_kws (supernet, measured "
                                 "latency; default nb201, mbconv with --method lightnas)")
        parser.add_argument("--target", required=True,
                            help="table space: a table target such as nb201-pixel2, or a column; supernet space: "
                                 "a host target (host-ort)")
        parser.add_argument("--latency-ms", type=float,
                            help="latency budget (lightnas: target) in ms; required but for lightnas with "
                                 "--latency-ratio/--reference or --peak-sram-kib")
        parser.add_argument("--method", default="hsconas",
                            help="hsconas | evolution | random | lightnas (default hsconas)")
        parser.add_argument("--n-trials", type=int, default=100, help="evaluated architectures (default 100)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--data-dir", help="table space: folder with the full nas-hw-benchmarks tables; supernet "
                                               "space: dataset folder (default: $DEVICEFIT_DATA_DIR, else the "
                                               "bundled copy)")
        parser.add_argument("--storage", help="optuna storage: SQLite path or database URL (default OUT.db)")
        parser.add_argument("--study-name", help="study name (default derived from the settings)")
        parser.add_argument("--out", default="search.json", help="JSON record of the search (default search.json)")
        parser.add_argument("--dataset", default="cifar10", help="table space: accuracy column (cifar10, cifar100, "
                                                                 "imagenet16_120)")
        s = parser.add_argument_group("supernet spaces (mbconv, mbconv_kws): every method")
        s.add_argument("--data", default="cifar10", help="training data of the supernet (default cifar10)")
        s.add_argument("--n-train", type=int, default=0, help="training images (default 0 = all)")
        s.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads (default 1)")
        s.add_argument("--work-dir", help="latency samples or table, supernet and searched network (default: OUT's "
                                          "name + '-work')")
        s.add_argument("--retrain-epochs", type=int, default=0,
                       help="train the chosen network from scratch for this many epochs and report its test "
                            "accuracy (default 0: supernet-weight accuracy only)")
        h = parser.add_argument_group("supernet spaces: hsconas, evolution, random")
        h.add_argument("--supernet-epochs", type=int, default=2, help="supernet training epochs (default 2)")
        h.add_argument("--path-sampling", default="uniform",
                       help="paths per supernet step: uniform (one, default) or sandwich (largest + smallest + "
                            "--n-random uniform ones, distilled from the largest; about 3x the time per epoch)")
        h.add_argument("--n-random", type=int, default=1, help="uniform paths per sandwich step (default 1)")
        h.add_argument("--retrain-top", type=int, default=1,
                       help="with --retrain-epochs: train the K best candidates by supernet accuracy from scratch and "
                            "choose the one with the best validation accuracy (default 1: the search's winner)")
        h.add_argument("--latency-samples", type=int, default=16,
                       help="networks timed for the latency model (default 16; reused once measured)")
        h.add_argument("--no-channel-scaling", action="store_true", help="skip HSCoNAS channel scaling")
        h.add_argument("--scaling-max-drop", type=float, default=None,
                       help="stop channel scaling when the supernet proxy falls by more than this (e.g. 0.01), "
                            "keeping the best widths seen (default: spend the budget)")
        h.add_argument("--bn-batches", type=int, default=4,
                       help="BatchNorm re-estimation batches per scored supernet path (default 4)")
        h.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                       help="search-method option (JSON value), e.g. --option stage_trials=10 --option shrink=false")
        g = parser.add_argument_group("supernet spaces: lightnas")
        g.add_argument("--width", type=float, default=0.5, help="stage width multiplier searched at (default 0.5)")
        g.add_argument("--warmup-epochs", type=int, default=2, help="weight-only epochs (default 2)")
        g.add_argument("--epochs", type=int, default=2, help="search epochs after the warm-up (default 2)")
        g.add_argument("--table-archs", type=int, default=60,
                       help="networks timed for the latency table (default 60; reused once fitted)")
        g.add_argument("--peak-sram-kib", type=float,
                       help="land on this int8 peak activation memory (KiB, exact analytic) instead of a latency")
        g.add_argument("--latency-ratio", type=float,
                       help="land on this multiple of --reference's latency, timed side by side on the target "
                            "(drift-proof on a shared machine; instead of --latency-ms)")
        g.add_argument("--reference",
                       help="the network --latency-ratio refers to: 'op@width' (the space's network with that op in "
                            "every layer, e.g. k3_e6@0.75 = its MobileNetV2 layout at width 0.75) or an .onnx file")
        g.add_argument("--no-anchor", action="store_true",
                       help="trust the latency table alone (default: the search measures its architecture)")

    def run(self, args: argparse.Namespace, out: Output) -> int:
        from devicefit.pipelines._search_job import SearchJobConfig
        from devicefit.space import TabularSpace, get_space

        if args.method == "lightnas":
            if args.retrain_top != 1:
                raise ConfigError("--retrain-top picks among a search's candidates; lightnas ends on one "
                                  "architecture (retrain it with --retrain-epochs)")
            return _lightnas(args, out)
        if args.latency_ms is None:
            raise ConfigError(f"--latency-ms is required for --method {args.method} (only lightnas can take "
                              "--latency-ratio with --reference, or --peak-sram-kib, instead)")
        args.space = args.space or "nb201"
        if not isinstance(get_space(args.space), TabularSpace):
            return _supernet(args, out)
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


def _lightnas(args: argparse.Namespace, out: Output) -> int:
    from devicefit.pipelines._lightnas_job import LightNASJobConfig, run_lightnas_job

    path = Path(args.out)
    cfg = LightNASJobConfig(latency_ms=args.latency_ms, peak_sram_kib=args.peak_sram_kib,
                            latency_ratio=args.latency_ratio, reference=args.reference,
                            work_dir=args.work_dir or str(path.with_suffix("")) + "-work",
                            space=args.space or "mbconv", target=args.target, data=args.data,
                            data_dir=args.data_dir, width=args.width, n_train=args.n_train,
                            warmup_epochs=args.warmup_epochs, search_epochs=args.epochs, table_archs=args.table_archs,
                            anchor=not args.no_anchor, retrain_epochs=args.retrain_epochs, threads=args.threads,
                            seed=args.seed)
    if out.progress:
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task("LightNAS", total=None)
            record = run_lightnas_job(cfg, path, log=out.say, on_batch=lambda done, total, e: bar.update(
                task, completed=done, total=total, description=f"LightNAS epoch {e + 1}"))
    else:
        record = run_lightnas_job(cfg, path, log=out.say)
    r = record["result"]
    if cfg.peak_sram_kib is not None:
        got = (f"peak SRAM {r['analyzed_peak_bytes'] / 1024:.4g} KiB for a {cfg.peak_sram_kib:g} KiB target "
               f"(analyzed/T {r['analyzed_over_target']:.3f})")
    elif cfg.latency_ratio is not None:
        got = (f"measured {r['measured_ratio']:.4g} x {cfg.reference} side by side for a {cfg.latency_ratio:g} x "
               f"target (measured/T {r['measured_over_target']:.3f})")
    else:
        got = (f"measured {r['measured_ms']:.4g} ms for a {cfg.latency_ms:g} ms target (measured/T "
               f"{r['measured_over_target']:.3f})")
    if record.get("retrain"):
        got += f"; trained from scratch: {100 * record['retrain']['test_accuracy']:.2f}% test accuracy"
    out.say(f"searched: {' '.join(r['spec']['params']['ops'])} at widths {r['spec']['params']['widths'][0]:g}; "
            f"{got}; record in {path}")
    out.set_result(**{k: v for k, v in record.items() if k != "evaluated"}, out=str(path))
    return 0


def _options(pairs: list[str]) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option takes KEY=VALUE, got {pair!r}")
        try:
            opts[key] = json.loads(value)
        except json.JSONDecodeError:
            opts[key] = value
    return opts


def _supernet(args: argparse.Namespace, out: Output) -> int:
    from devicefit.pipelines._supernet_search_job import SupernetSearchJobConfig, run_supernet_search_job

    path = Path(args.out)
    cfg = SupernetSearchJobConfig(
        latency_ms=args.latency_ms, work_dir=args.work_dir or str(path.with_suffix("")) + "-work", space=args.space,
        method=args.method, target=args.target, data=args.data, data_dir=args.data_dir, n_train=args.n_train,
        supernet_epochs=args.supernet_epochs, path_sampling=args.path_sampling, n_random=args.n_random,
        n_trials=args.n_trials, options=_options(args.option),
        latency_samples=args.latency_samples, channel_scaling=not args.no_channel_scaling,
        scaling_max_drop=args.scaling_max_drop,
        bn_batches=args.bn_batches, retrain_epochs=args.retrain_epochs, retrain_top=args.retrain_top,
        threads=args.threads, seed=args.seed, storage=args.storage, study_name=args.study_name)
    record = run_supernet_search_job(cfg, path, log=out.say, progress=out.progress)
    c = record["chosen"]
    out.say(f"chosen: {' '.join(c['spec']['params']['ops'])} at widths {c['spec']['params']['widths']}; measured "
            f"{c['measured_ms']:.4g} ms for a {cfg.latency_ms:g} ms budget (predicted {c['predicted_ms']:.4g} ms); "
            f"{record['n_evaluated']} candidates recorded in {path} (study {record['study_name']!r} in "
            f"{record['storage']})")
    fronts = ", ".join(f"{len(v)} vs {k.split(':')[-1]}" for k, v in record["pareto"].items())
    out.say(f"Pareto fronts of supernet accuracy: {fronts} (trial numbers under 'pareto' in {path})")
    if record["retrain"]:
        rt = record["retrain"]
        for i, f in enumerate(rt.get("finalists", [])):
            out.say(f"finalist {i + 1}: supernet accuracy {100 * f['supernet_val_accuracy']:.1f}%, trained "
                    f"validation {100 * f['val_accuracy']:.1f}%, test {100 * f['test_accuracy']:.2f}%"
                    f"{' (chosen)' if i == rt['finalist'] else ''}")
        out.say(f"retrained from scratch for {rt['epochs']} epoch(s): test accuracy {100 * rt['test_accuracy']:.2f}%")
    out.set_result(**{k: v for k, v in record.items() if k != "evaluated"}, out=str(path))
    return 0


def _run_with_progress(cfg: object, out_path: Path, out: Output) -> tuple[object, dict]:
    from devicefit.pipelines._search_job import run_search_job

    if not out.progress:
        return run_search_job(cfg, out_path)  # type: ignore[arg-type]
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task("search", total=cfg.n_trials)  # type: ignore[attr-defined]
        return run_search_job(cfg, out_path, on_trial=lambda e: bar.advance(task))  # type: ignore[arg-type]
