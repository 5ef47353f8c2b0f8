"""`devicefit train`: train a zoo model on a dataset; writes a run directory."""

from __future__ import annotations

import argparse
import json

from ._config_args import add_config_args, resolve_config
from ._output import Output
from ._registry import command


@command("train")
class TrainCommand:
    help = "train a zoo model on a dataset (config file + --set overrides); resumes an interrupted run"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        add_config_args(parser)
        parser.add_argument("--model", help="shortcut for --set model.name=...")
        parser.add_argument("--data", help="shortcut for --set data.name=...")
        parser.add_argument("--epochs", type=int, help="shortcut for --set train.epochs=...")
        parser.add_argument("--data-dir", help="folder with full dataset copies (default: $DEVICEFIT_DATA_DIR, "
                                               "else the bundled subset)")
        parser.add_argument("--run-dir", help="output folder (default: runs/<model>-<data>-<config hash>)")

    def run(self, args: argparse.Namespace, out: Output) -> int:
        from devicefit.pipelines import TrainJobConfig, run_train_job

        shortcuts = (("model.name", args.model), ("data.name", args.data), ("train.epochs", args.epochs),
                     ("data.data_dir", args.data_dir), ("run_dir", args.run_dir))
        extra = [f"{key}={json.dumps(value)}" for key, value in shortcuts if value is not None]
        cfg = resolve_config(TrainJobConfig, args, extra)
        m = run_train_job(cfg, progress=out.progress, echo=out.say if out.progress else None)
        summarize(m, out)
        return 0


def summarize(m: dict, out: Output) -> None:
    """Print the headline of a train job: accuracy and the model's cost."""
    from devicefit.reports import format_bytes, format_count

    cached = " (cached: this config had already finished)" if m.get("cached") else ""
    out.say(f"\n[bold]{m['model']}[/] on {m['data_source']}{cached}")
    out.say(f"  test accuracy          {100 * m['test_accuracy']:.2f}%  ({m['n_test']} test images)")
    out.say(f"  parameters             {m['params']:,}")
    out.say(f"  MACs                   {m['macs']:,} ({format_count(m['macs'])})")
    out.say(f"  parameter bytes        {m['param_bytes']:,} ({format_bytes(m['param_bytes'])}) at "
            f"{m['weight_bits']}-bit weights")
    out.say(f"  peak activation memory {m['peak_activation_bytes']:,} B ({format_bytes(m['peak_activation_bytes'])})"
            f" at {m['act_bits']}-bit activations, batch 1")
    out.say(f"  train time             {m['train_seconds']:.1f} s")
    out.say(f"  run directory          {m['run_dir']}")
    out.set_result(**{k: v for k, v in m.items() if k != "history"})
