"""`devicefit finetune RUN_DIR` (alias `adapt`): fine-tune a trained run on new data within a training-memory
budget; also owns the parsing of `--memory-budget` sizes (256KiB, 1.5MiB, 262144)."""

from __future__ import annotations

import argparse
import json
import re

from devicefit.core import ConfigError

from ._config_args import add_config_args, resolve_config
from ._output import Output
from ._registry import command

_UNITS = {"": 1, "b": 1, "kib": 1024, "kb": 1000, "k": 1024, "mib": 1024 ** 2, "mb": 1000 ** 2, "m": 1024 ** 2}


def parse_memory_budget(text: str) -> float:
    """'256KiB', '1.5 MiB', '300kB' or a plain byte count → KiB (1 KiB = 1024 bytes)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text or "")
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS or float(match.group(1)) <= 0:
        raise ConfigError(f"--memory-budget must be a positive size such as 256KiB, 1.5MiB or 262144 (bytes), "
                          f"got {text!r}")
    return float(match.group(1)) * _UNITS[unit] / 1024


@command("finetune")
class FinetuneCommand:
    help = "fine-tune a trained run on new data within a device training-memory budget (auto/bias/sparse/last-k/full)"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run_dir", help="a finished `devicefit train` run directory (only read)")
        add_config_args(parser)
        parser.add_argument("--scheme", help="auto (budgeted selector), full, last-k, bias or sparse "
                                             "(shortcut for --set scheme=...)")
        budget = parser.add_mutually_exclusive_group()
        budget.add_argument("--memory-budget", help="training-memory budget, e.g. 256KiB or 1MiB: saved activations "
                                                    "+ gradients + optimizer state (needed for auto)")
        budget.add_argument("--budget-kib", type=float, help="the same budget as a number of KiB")
        parser.add_argument("--data", help="dataset of the new data (default: the run's, with its options)")
        parser.add_argument("--split", help="split holding the new data (default: test)")
        parser.add_argument("--epochs", type=int, help="shortcut for --set train.epochs=...")
        parser.add_argument("--out", help="output run directory (default: <RUN_DIR>-adapt-<scheme>-<hash>)")

    def run(self, args: argparse.Namespace, out: Output) -> int:
        from devicefit.pipelines._adapt_job import AdaptJobConfig, run_adapt_job

        budget_kib = parse_memory_budget(args.memory_budget) if args.memory_budget is not None else args.budget_kib
        shortcuts = (("source_run", args.run_dir), ("scheme", args.scheme), ("budget_kib", budget_kib),
                     ("data.name", args.data), ("split", args.split), ("train.epochs", args.epochs),
                     ("run_dir", args.out))
        extra = [f"{key}={json.dumps(value)}" for key, value in shortcuts if value is not None]
        cfg = resolve_config(AdaptJobConfig, args, extra)
        m = run_adapt_job(cfg, echo=out.say if out.progress else None)
        _summarize(m, out)
        return 0


@command("adapt")
class AdaptCommand(FinetuneCommand):
    help = "alias of `finetune` (the name earlier releases used)"


def _summarize(m: dict, out: Output) -> None:
    from devicefit.reports import format_bytes

    mem = m["memory"]
    cached = " (cached: this config had already finished)" if m.get("cached") else ""
    out.say(f"\n[bold]{m['model']}[/] adapted on {m['data_source']} [{m['split']}]{cached}")
    out.say(f"  scheme                 {m['scheme']['name']}  (layers {m['scheme']['layers']}, "
            f"bias_layers {m['scheme']['bias_layers']})")
    out.say(f"  held-out accuracy      {100 * m['accuracy_before']:.2f}% → {100 * m['accuracy_after']:.2f}%  "
            f"({m['n_heldout']} examples; {m['n_adapt']} used to adapt)")
    out.say(f"  training memory        {format_bytes(mem['budget_bytes'])} (activations "
            f"{format_bytes(mem['saved_activation_bytes'])}, gradients {format_bytes(mem['gradient_bytes'])}, "
            f"optimizer {format_bytes(mem['optimizer_state_bytes'])}) at batch {mem['batch_size']}, modelled")
    out.say(f"  run directory          {m['run_dir']}")
    out.set_result(**{k: v for k, v in m.items() if k != "candidates"})
