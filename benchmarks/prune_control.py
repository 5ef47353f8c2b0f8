"""The matched control of a pruning run: the unpruned source fine-tuned with the same recipe for as many epochs
as the pruned network trained (its rounds' fine-tuning plus the final fine-tune), so that the pruned network's
accuracy is judged against a network trained as long, not against the source.

    python benchmarks/prune_control.py benchmarks/runs/resnet20-cifar10-full \\
        --prune-result benchmarks/results/prune-resnet20-round8-final36.json --name prune-resnet20-round8-control

Reads the pruning job's record (its `compress.json`, kept under benchmarks/results): the fine-tune recipe
(`finetune`), the number of pruning rounds (`details.history`, the entries after the unpruned one) and
`final_epochs`. Runs `devicefit.pipelines._compress_job` with method "finetune" on SOURCE for rounds ×
finetune.epochs + final_epochs epochs, in `benchmarks/runs/<name>` (checkpointed: a killed run resumes), and
writes benchmarks/results/<name>.{json,md}: source, control and pruned accuracy (ONNX Runtime, full test set).
When SOURCE is not the pruned run's source checkpoint (e.g. retrained with the same recipe in another session),
the table says so and gives both sources' accuracy.
When the run restarted its final fine-tune at its own rate (`final_lr`, `--final-lr`), the control follows the
same two-rate schedule: the epochs before the final ones at finetune.lr in `benchmarks/runs/<name>-rounds`, then
final_epochs restarted at final_lr from there.

To train the control while the pruning job still runs, give `--prune-result` the pruning run's directory and
`--epochs N`: the recipe comes from the run's `config.json` (written when it starts), the control trains N
epochs, and the script then waits for the run's `compress.json` and refuses to write a result when the pruned
network's epoch count differs from N. The result then links the record as `<run name>.json`, the name to copy
it under in benchmarks/results.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from devicefit.core import (
    atomic_write_json,
    atomic_write_text,
    from_dict,
    machine_info,
    read_json,
    sha256_file,
    to_dict,
)
from devicefit.pipelines._compress_job import CompressJobConfig, _final_lr, load_source, run_compress_job
from devicefit.pipelines._train_job import DataConfig
from devicefit.train import TrainConfig

ROOT = Path(__file__).resolve().parent


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("source", type=Path, help="the unpruned source run directory")
    ap.add_argument("--prune-result", type=Path, required=True,
                    help="the pruning job's compress.json, or its run directory (with --epochs)")
    ap.add_argument("--epochs", type=int, default=None,
                    help="control epochs, to start before the pruning job ends (checked against it afterwards)")
    ap.add_argument("--data-dir", default="../shared/data",
                    help="full dataset copies (default ../shared/data; '' = the bundled subset)")
    ap.add_argument("--name", default="prune-control", help="results stem and run folder name")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: the pruning run's)")
    return ap.parse_args()


def main() -> None:
    args = parse()
    record = args.prune_result / "compress.json" if args.prune_result.is_dir() else args.prune_result
    if args.epochs is None:
        pcfg = read_json(record)["config"]
        epochs = pruned_epochs(read_json(record))
    elif args.epochs < 1:
        raise SystemExit(f"--epochs must be >= 1, got {args.epochs}")
    elif not args.prune_result.is_dir():
        raise SystemExit(f"--epochs needs --prune-result to be the pruning run's directory, got {args.prune_result}")
    else:
        pcfg = read_json(args.prune_result / "config.json")["config"]
        epochs = args.epochs
    overrides: dict[str, Any] = {"epochs": epochs}
    if args.threads:
        overrides["threads"] = args.threads
    ft = from_dict(TrainConfig, {**pcfg["finetune"], **overrides})
    final_lr, final_epochs = pcfg.get("final_lr"), int(pcfg.get("final_epochs", 0))
    if final_lr is not None:  # a number, or "source": the rate SOURCE was trained with, resolved as the job does
        final_lr = _final_lr(from_dict(CompressJobConfig, {**pcfg, "source": str(args.source)}),
                             load_source(CompressJobConfig(source=str(args.source), run_dir="-")))
    # the pruned network's schedule: rounds at finetune.lr, then (with final_lr) the final epochs at their own rate
    phases = [(epochs, ft.lr)] if final_lr is None else [(epochs - final_epochs, ft.lr), (final_epochs, final_lr)]
    if any(n < 1 for n, _ in phases):
        raise SystemExit(f"--epochs {epochs} leaves no epoch before the {final_epochs} final ones")
    run_dir = ROOT / "runs" / args.name
    t0, source, first = time.perf_counter(), args.source, None
    for i, (n, lr) in enumerate(phases):
        cfg = CompressJobConfig(source=str(source), method="finetune", run_dir=str(
                                    run_dir if i == len(phases) - 1 else run_dir.with_name(f"{args.name}-rounds")),
                                finetune=from_dict(TrainConfig, {**to_dict(ft), "epochs": n, "lr": lr}),
                                distill=bool(pcfg.get("distill")), latency_rounds=int(pcfg.get("latency_rounds", 5)),
                                latency_repeats=int(pcfg.get("latency_repeats", 30)),
                                data=from_dict(DataConfig, {**pcfg["data"], "data_dir": args.data_dir or None}))
        print(f"[{time.strftime('%H:%M:%S')}] control: {source.name} fine-tuned {n} epochs, lr {lr}", flush=True)
        m = run_compress_job(cfg)
        first, source = first or m, Path(cfg.run_dir)
    assert first is not None
    m = {**m, "before": first["before"]}  # the source's figures, not the previous phase's
    wall_s = time.perf_counter() - t0
    while not record.exists():  # --epochs: the pruning job may still be running
        print(f"[{time.strftime('%H:%M:%S')}] control trained; waiting for {record}", flush=True)
        time.sleep(60)
    pruned = read_json(record)
    pm = pruned["metrics"]
    rounds = max(len(pm["details"].get("history", [])) - 1, 0)  # the first entry is the unpruned timing
    if pruned_epochs(pruned) != epochs:
        raise SystemExit(f"the pruned network trained {pruned_epochs(pruned)} epochs ({rounds} rounds), the control "
                         f"{epochs} (--epochs): not a matched control; rerun with --epochs {pruned_epochs(pruned)} "
                         "and a new --name")
    same_source = (pm["before"]["accuracy"] == m["before"]["accuracy"])
    linked = record.name if record == args.prune_result else f"{args.prune_result.name}.json"
    doc = {"benchmark": args.name, "source": args.source.name, "prune_result": linked,
           "epochs": epochs, "rounds": rounds, "round_epochs": int(pruned["config"]["finetune"]["epochs"]),
           "final_epochs": int(pruned["config"].get("final_epochs", 0)), "finetune": pcfg["finetune"] | overrides,
           "final_lr": final_lr,
           "depth_epochs": depth_epochs(pruned), "blocks_removed": pm["details"].get("blocks", {}).get("removed", []),
           "source_accuracy": m["before"]["accuracy"], "control_accuracy": m["after"]["accuracy"],
           "pruned_source_accuracy": pm["before"]["accuracy"], "pruned_accuracy": pm["after"]["accuracy"],
           "pruned_speedup": pm.get("speedup"), "pruned_macs": pm["after"]["macs"], "macs": m["before"]["macs"],
           "same_source_accuracy": same_source, "control_gain": m["after"]["accuracy"] - m["before"]["accuracy"],
           "pruned_vs_control": pm["after"]["accuracy"] - m["after"]["accuracy"],
           "pruned_vs_its_source": pm["after"]["accuracy"] - pm["before"]["accuracy"],
           "source_sha256": sha256_file(args.source / "model.pt"), "test_source": m.get("test_source"),
           "wall_s": wall_s, "machine": machine_info(), "control_record": m}
    out = ROOT / "results" / args.name
    doc = json.loads(json.dumps(doc, default=str).replace(str(ROOT.parent) + "/", "").replace(
        str(Path(args.data_dir or ".").resolve()), args.data_dir or "."))  # results carry no machine paths
    atomic_write_json(out.with_suffix(".json"), doc)
    atomic_write_text(out.with_suffix(".md"), markdown(doc))
    print(markdown(doc))


def depth_epochs(pruned: dict[str, Any]) -> int:
    """Epochs of the one fine-tune after residual blocks were removed, 0 without it. The blocks are counted
    from the run's record, which also holds them when `--drop-blocks auto` chose the count (the config's
    `depth.blocks` then stays 0)."""
    cfg = pruned["config"]
    removed = ((pruned["metrics"]["details"].get("blocks") or {}).get("removed"))
    blocks = len(removed) if removed is not None else (cfg.get("depth") or {}).get("blocks", 0)
    return int(cfg["finetune"]["epochs"]) if blocks and not cfg.get("no_finetune") else 0


def pruned_epochs(pruned: dict[str, Any]) -> int:
    """Epochs the pruned network trained: the fine-tune after removing blocks, each channel-pruning round's
    fine-tune and the final fine-tune."""
    rounds = max(len(pruned["metrics"]["details"].get("history", [])) - 1, 0)  # entry 0 is the starting timing
    return (depth_epochs(pruned) + rounds * int(pruned["config"]["finetune"]["epochs"])
            + int(pruned["config"].get("final_epochs", 0)))


def markdown(d: dict[str, Any]) -> str:
    pct = lambda v: f"{100 * v:.2f}%"  # noqa: E731
    pts = lambda v: f"{100 * v:+.2f}"  # noqa: E731
    lines = [f"# Matched control of a pruning run ({d['benchmark']})", "",
             f"Control: the unpruned `{d['source']}` fine-tuned {d['epochs']} epochs ("
             + (f"{d['depth_epochs']} after removing {len(d['blocks_removed'])} blocks + "
                if d.get("depth_epochs") else "")
             + f"{d['rounds']} pruning rounds × {d['round_epochs']} + {d['final_epochs']} final) with the pruning "
             "run's recipe "
             f"(SGD lr {d['finetune']['lr']}"
             + (f", the final {d['final_epochs']} epochs restarted at lr {d['final_lr']}" if d.get("final_lr") else "")
             + f", {d['finetune']['schedule']}, batch {d['finetune']['batch_size']}, "
             f"{d['finetune']['threads']} threads; {d['wall_s'] / 60:.0f} min), method `finetune` of the compress job. "
             "Pruned: "
             f"[`{d['prune_result']}`]({d['prune_result']}). Accuracy by ONNX Runtime on {d['test_source']}.", "",
             "| network | test accuracy | vs its source (pt) | MACs |", "|---|---:|---:|---:|",
             f"| source (this run) | {pct(d['source_accuracy'])} | – | {d['macs']:,} |",
             f"| **control**: source + {d['epochs']} epochs | {pct(d['control_accuracy'])} | "
             f"{pts(d['control_gain'])} | {d['macs']:,} |",
             f"| pruned run's source | {pct(d['pruned_source_accuracy'])} | – | {d['macs']:,} |",
             f"| **pruned** ({d['pruned_speedup']:.2f}× measured) | {pct(d['pruned_accuracy'])} | "
             f"{pts(d['pruned_vs_its_source'])} | {d['pruned_macs']:,} |", "",
             f"**Pruned vs control: {pts(d['pruned_vs_control'])} points.**"]
    if not d["same_source_accuracy"]:
        lines += ["", "The two sources are different checkpoints trained with the same recipe (their accuracies "
                  "differ), so the comparison is matched in recipe and epochs, not in starting weights."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
