"""`devicefit profile`: measure sampled architectures of a space on this machine and fit predictors."""

from __future__ import annotations

import argparse
import json

from ._config_args import add_config_args, resolve_config
from ._output import Output
from ._registry import command


@command("profile")
class ProfileCommand:
    help = "measure N architectures of a space on a host target, fit and validate latency predictors"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        add_config_args(parser)
        parser.add_argument("--space", help="search space (shortcut for --set space=...; default nb201)")
        parser.add_argument("--n", type=int, help="architectures to measure (default 300)")
        parser.add_argument("--target", help="host target to measure on (default host-ort)")
        parser.add_argument("--threads", type=int, help="runtime threads (default: usable cores)")
        parser.add_argument("--sessions", type=int,
                            help="fresh runtime sessions per figure; the figure is their median (default 5)")
        parser.add_argument("--passes", type=int,
                            help="sweeps over the sample; a figure is the median over passes (default 1)")
        parser.add_argument("--data-dir", help="folder with the measured tables (prior of the transfer predictor)")
        parser.add_argument("--run-dir", help="output folder (default runs/profile-<space>-<target>-n<N>-s<seed>)")

    def run(self, args: argparse.Namespace, out: Output) -> int:
        from devicefit.pipelines import ProfileJobConfig, run_profile_job

        shortcuts = (("space", args.space), ("n", args.n), ("target", args.target), ("threads", args.threads),
                     ("passes", args.passes), ("sessions", args.sessions), ("data_dir", args.data_dir),
                     ("run_dir", args.run_dir))
        cfg = resolve_config(ProfileJobConfig, args, [f"{k}={json.dumps(v)}" for k, v in shortcuts if v is not None])
        summary = run_profile_job(cfg, progress=out.progress, echo=out.say if out.progress else None)
        lat, cv = summary["latency_ms"], summary["measurement_cv"]
        out.say(f"\nmeasured {summary['n_measured']} {cfg.space} architectures on {cfg.target}: "
                f"{lat['min']:.3f}–{lat['max']:.3f} ms (median {lat['median']:.3f}); "
                f"median CV {100 * cv['median']:.1f}%, {100 * cv['share_stable']:.0f}% stable")
        rep = summary.get("repeatability")
        if rep:
            out.say(f"repeatability: reference network measured {rep['n']} times, cv {100 * rep['cv']:.1f}%, "
                    f"max/min {rep['max_over_min']:.3f}")
        out.table(f"predictors on {summary['n_test']} held-out architectures (trained on {summary['n_train']})",
                  ["predictor", "within ±5%", "within ±10%", "MAPE", "Spearman", "Kendall"],
                  [[k, f"{100 * m['within_5']:.1f}%", f"{100 * m['within_10']:.1f}%", f"{100 * m['mape']:.1f}%",
                    f"{m['spearman']:.3f}", f"{m['kendall']:.3f}"] for k, m in summary["predictors"].items()])
        out.say(f"run directory: {summary['run_dir']}")
        out.set_result(**summary)
        return 0
