"""`devicefit prune | quantize | distill SOURCE --run-dir OUT`: compress a trained run into a new run directory."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ._config_args import add_config_args
from ._output import Output
from ._registry import command

_HEADLINE = (("accuracy", "test accuracy", lambda v: f"{100 * v:.2f}%"),
             ("onnx_bytes", "ONNX bytes", lambda v: f"{v:,}"),
             ("macs", "MACs", lambda v: f"{v:,}"))


class _CompressCommand:
    """Shared shape: SOURCE, --run-dir, --config/--set over `CompressJobConfig`, method-specific shortcuts."""

    method = ""
    help = ""

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("source", help="a train run directory, or a weights file (then --spec)")
        parser.add_argument("--spec", help="spec.json of the model when SOURCE is a weights file")
        parser.add_argument("--run-dir", required=True, help="the new output folder (the source is never written)")
        parser.add_argument("--data-dir", help="folder with full dataset copies (default: the source run's)")
        add_config_args(parser)
        self.add_shortcuts(parser)

    def add_shortcuts(self, parser: argparse.ArgumentParser) -> None:
        """Method-specific flags, each a shortcut for a `--set key=value`."""

    def shortcuts(self, args: argparse.Namespace) -> list[tuple[str, Any]]:
        return []

    def run(self, args: argparse.Namespace, out: Output) -> int:
        from devicefit.pipelines._compress_job import CompressJobConfig, run_compress_job

        pairs = [("method", self.method), ("source", args.source), ("spec", args.spec), ("run_dir", args.run_dir),
                 ("data.data_dir", args.data_dir), *self.shortcuts(args)]
        extra = [f"{key}={json.dumps(value)}" for key, value in pairs if value is not None]
        cfg = _resolve(CompressJobConfig, args, extra)
        m = run_compress_job(cfg, echo=out.say if out.progress else None)
        _summarize(m, out)
        return 0


def _resolve(cls: type, args: argparse.Namespace, extra: list[str]) -> Any:
    """Like `resolve_config`, but every section starts from the job's own defaults (its fine-tune recipe is a
    short low-lr one, its student defaults to the teacher's family), so `--set finetune.epochs=3` does not
    fall back to `TrainConfig`'s 30-epoch recipe."""
    from devicefit.core import apply_overrides, from_dict, load_config_file, to_dict

    data: dict[str, Any] = load_config_file(args.config) if args.config else {}
    for name, value in to_dict(cls(source="-", run_dir="-")).items():
        if isinstance(value, dict):  # a section: the file's keys over the job's defaults
            data[name] = {**value, **data.get(name, {})}
    return from_dict(cls, apply_overrides(data, [*extra, *args.overrides]))


def _summarize(m: dict[str, Any], out: Output) -> None:
    rows = [[label, fmt(m["before"][key]), fmt(m["after"][key])] for key, label, fmt in _HEADLINE]
    rows.append(["latency ms (median)", f"{m['before_latency_ms']:.4g}", f"{m['after_latency_ms']:.4g}"])
    cached = " (cached)" if m.get("cached") else ""
    out.table(f"{m['method']}: {m['source']} → {m.get('run_dir', '')}{cached}", ["", "before", "after"], rows)
    out.say(f"speed-up {m['speedup']:.2f}× ({m['latency_method']}); test: {m['test_source']}")
    blocks = (m.get("details") or {}).get("blocks")
    if blocks:
        out.say(f"residual blocks removed ({blocks['criterion']}): {', '.join(blocks['removed'])}")
    out.set_result(**m)


def _final_lr_arg(value: str) -> float | str:
    """--final-lr: a learning rate or "source" (the config checks that a number is > 0)."""
    if value == "source":
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a learning rate or 'source', got {value!r}") from None


def _blocks_arg(value: str) -> int | str:
    """--drop-blocks: a count of blocks (>= 0) or "auto"."""
    if value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a number of blocks (0 or more) or 'auto', got {value!r}")
    return n


@command("prune")
class PruneCommand(_CompressCommand):
    method = "prune"
    help = ("structured pruning (channels and residual blocks physically removed) with fine-tuning; writes a new "
            "run directory")

    def add_shortcuts(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--ratio", type=float, help="fraction of channels removed, in (0, 1)")
        parser.add_argument("--importance", help="l1, l2, bn_scale or taylor")
        parser.add_argument("--steps", type=int, help="pruning steps (fine-tune after each)")
        parser.add_argument("--epochs", type=int, help="fine-tune epochs per step")
        parser.add_argument("--distill", action="store_true", default=None, help="fine-tune against the source")
        parser.add_argument("--latency-ms", type=float, help="latency-driven: prune until the target measures this")
        parser.add_argument("--speedup", type=float,
                            help="latency-driven: prune until the model runs this many times faster than the "
                                 "source, both timed side by side (robust to a drifting machine)")
        parser.add_argument("--max-step-ratio", type=float,
                            help="latency-driven: most channels one round removes (default 0.3)")
        parser.add_argument("--tolerance", type=float,
                            help="latency-driven: accept a measured figure this fraction short of the goal "
                                 "(default 0; the timing itself spreads about ±10%% on a shared CPU)")
        parser.add_argument("--drop-blocks", type=_blocks_arg, metavar="N|auto",
                            help="first remove this many residual blocks (depth pruning), then prune channels; "
                                 "auto (with --speedup or --latency-ms): try every count, each pruned to the goal, "
                                 "and keep the one with the most MACs left (--set depth_search_judge=finetune: "
                                 "the best validation accuracy after one epoch on 10,000 images)")
        parser.add_argument("--block-criterion", help="how blocks are chosen: loss (default) or branch_norm")
        parser.add_argument("--no-channels", dest="channel_pruning", action="store_false", default=None,
                            help="with --drop-blocks: remove blocks only, no channel pruning")
        parser.add_argument("--final-epochs", type=int,
                            help="after pruning, fine-tune this many more epochs (checkpointed; a killed job "
                                 "resumes there)")
        parser.add_argument("--final-lr", type=_final_lr_arg, metavar="LR|source",
                            help="peak learning rate of the final fine-tune (default: the fine-tune's, 0.01); "
                                 "'source': the rate the source run was trained with (learning-rate rewinding, "
                                 "which recovers more)")

    def shortcuts(self, args: argparse.Namespace) -> list[tuple[str, Any]]:
        return [("prune.ratio", args.ratio), ("prune.importance", args.importance), ("prune.steps", args.steps),
                ("finetune.epochs", args.epochs), ("distill", args.distill), ("latency_ms", args.latency_ms),
                ("speedup", args.speedup), ("max_step_ratio", args.max_step_ratio),
                ("goal_tolerance", args.tolerance), ("final_epochs", args.final_epochs),
                ("final_lr", args.final_lr),
                ("depth_search", True if args.drop_blocks == "auto" else None),
                ("depth.blocks", None if args.drop_blocks == "auto" else args.drop_blocks),
                ("depth.criterion", args.block_criterion), ("channel_pruning", args.channel_pruning)]


@command("quantize")
class QuantizeCommand(_CompressCommand):
    method = "quantize"
    help = "int8 post-training quantization to ONNX QDQ (uint8 activations, int8 weights); new run directory"

    def add_shortcuts(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--calibrator", help="minmax, percentile, mse or entropy")
        parser.add_argument("--per-tensor", action="store_true", default=None, help="one weight scale per tensor")
        parser.add_argument("--equalize", action="store_true", default=None, help="cross-layer equalization")
        parser.add_argument("--bias-correction", action="store_true", default=None, help="correct weight-rounding bias")

    def shortcuts(self, args: argparse.Namespace) -> list[tuple[str, Any]]:
        per_channel = False if args.per_tensor else None
        return [("ptq.calibrator", args.calibrator), ("ptq.per_channel", per_channel),
                ("ptq.equalize", args.equalize), ("ptq.bias_correction", args.bias_correction)]


@command("distill")
class DistillCommand(_CompressCommand):
    method = "distill"
    help = "train a student zoo model against SOURCE as teacher (knowledge distillation); new run directory"

    def add_shortcuts(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--student", help="zoo model of the student (default: the teacher's family)")
        parser.add_argument("--width-mult", type=float, help="student width multiplier")
        parser.add_argument("--epochs", type=int, help="training epochs")

    def shortcuts(self, args: argparse.Namespace) -> list[tuple[str, Any]]:
        return [("student.name", args.student), ("student.params.width_mult", args.width_mult),
                ("finetune.epochs", args.epochs)]
