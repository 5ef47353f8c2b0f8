"""Several `devicefit prune` runs of one source, side by side: each pruned network's accuracy against the
source and against the matched control (`prune_control.py`), and every ONNX file re-timed together in one
interleaved run on a quiet machine, so the speed-ups compare within one measurement rather than across the
runs' own timings (taken while other jobs trained beside them).

    python benchmarks/prune_compare.py --control benchmarks/results/prune-r20-depth4-control.json \\
        --runs depth4-auto=benchmarks/runs/prune-r20-depth4 depth4-r8=benchmarks/runs/prune-r20-depth4-r8 \\
               width-r8=benchmarks/runs/prune-r20-width --name prune-r20-compare

Writes benchmarks/results/<name>.{json,md}. The source's ONNX file is the first run's `before.onnx`; every run
must name the same source checkpoint (its SHA-256 in the records), else the script stops.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from devicefit.core import machine_info, read_json
from devicefit.hardware import measure_interleaved

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prune_control import pruned_epochs
from prune_report import relative, write_result

ROOT = Path(__file__).resolve().parent


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--runs", nargs="+", required=True, help="label=prune run directory, in table order")
    ap.add_argument("--control", type=Path, required=True, help="prune_control.py's result JSON for this source")
    ap.add_argument("--name", default="prune-compare", help="results stem")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds")
    ap.add_argument("--repeats", type=int, default=100, help="timed runs per model per round")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads")
    return ap.parse_args()


def load_runs(specs: list[str]) -> dict[str, tuple[Path, dict[str, Any]]]:
    runs: dict[str, tuple[Path, dict[str, Any]]] = {}
    for spec in specs:
        label, sep, path = spec.partition("=")
        if not sep or not label or label in runs or label == "source":
            raise SystemExit(f"--runs takes distinct label=DIR pairs (not 'source'), got {spec!r}")
        record = Path(path) / "compress.json"
        if not record.is_file():
            raise SystemExit(f"{path} is not a finished prune run: {record} is missing")
        runs[label] = (Path(path), read_json(record))
    sources = {tuple(sorted(r["metrics"]["source_sha256"].values())) for _, r in runs.values()}
    if len(sources) != 1:
        raise SystemExit(f"the runs prune different sources ({len(sources)} distinct source hashes)")
    return runs


def main() -> None:
    args = parse()
    runs = load_runs(args.runs)
    control = read_json(args.control)
    first_dir, first = next(iter(runs.values()))
    if control["source_sha256"] not in first["metrics"]["source_sha256"].values():
        raise SystemExit(f"{args.control} is the control of another source checkpoint")
    shape = tuple(read_json(first_dir / "spec.json")["params"]["input_shape"])
    files = {"source": first_dir / "before.onnx"} | {k: d / "model.onnx" for k, (d, _) in runs.items()}
    print(f"timing {len(files)} ONNX files: {args.rounds} interleaved rounds x {args.repeats} runs", flush=True)
    m = measure_interleaved(files, "host-ort", input_shape=shape, rounds=args.rounds, repeats=args.repeats,
                            threads=args.threads, seed=0)
    src_acc, ctl_acc = first["metrics"]["before"]["accuracy"], control["control_accuracy"]
    rows = [{"label": "source", "accuracy": src_acc, "macs": first["metrics"]["before"]["macs"],
             "params": first["metrics"]["before"]["params"], "latency_ms": m.median_ms("source"), "speedup": 1.0,
             "epochs": 0}]
    rows.append({"label": f"control (source + {control['epochs']} epochs)", "accuracy": ctl_acc,
                 "macs": first["metrics"]["before"]["macs"], "params": first["metrics"]["before"]["params"],
                 "latency_ms": None, "speedup": 1.0, "epochs": control["epochs"]})
    for label, (_, rec) in runs.items():
        met, cfg = rec["metrics"], rec["config"]
        blocks = (met["details"].get("blocks") or {}).get("removed", [])
        rows.append({"label": label, "accuracy": met["after"]["accuracy"], "macs": met["after"]["macs"],
                     "params": met["after"]["params"], "latency_ms": m.median_ms(label),
                     "speedup": m.ratio("source", label), "speedup_p10_p90": _spread(m, label),
                     "run_speedup": met["speedup"],
                     "epochs": pruned_epochs(rec), "blocks_removed": blocks,
                     "round_to": met["details"].get("round_to"), "round_floor": met["details"].get("round_floor"),
                     "channel_rounds": max(len(met["details"].get("history", [])) - 1, 0),
                     "final_lr": _final_lr(rec),
                     "matched": (pruned_epochs(rec) == control["epochs"]
                                 and _final_lr(rec) == (control.get("final_lr") or control["finetune"]["lr"])),
                     "distill": bool(cfg.get("distill"))})
    doc = relative({"benchmark": args.name, "rows": rows, "source_accuracy": src_acc, "control_accuracy": ctl_acc,
                    "control": args.control.name, "control_final_lr": control.get("final_lr"),
                    "test_source": first["metrics"]["test_source"],
                    "n_test": first["metrics"]["n_test"], "timing": dict(m.method), "rounds_ms": m.rounds_ms,
                    "rounds": args.rounds, "repeats": args.repeats, "threads": args.threads,
                    "machine": machine_info(), "runs": {k: str(d) for k, (d, _) in runs.items()}})
    write_result(ROOT / "results" / args.name, doc, markdown(doc))


def _final_lr(rec: dict[str, Any]) -> float:
    """The peak learning rate a prune run's final fine-tune used: as recorded, else (records before session 20)
    the per-round rate."""
    ran = rec["metrics"]["details"].get("final_finetune") or {}
    return float(ran.get("lr") or rec["config"]["finetune"]["lr"])


def _spread(m: Any, label: str) -> list[float]:
    """p10 and p90 over rounds of the per-round speed-up source / `label`."""
    ratios = np.asarray(m.rounds_ms["source"]) / np.asarray(m.rounds_ms[label])
    return [float(np.percentile(ratios, 10)), float(np.percentile(ratios, 90))]


def markdown(d: dict[str, Any]) -> str:
    pct = lambda v: f"{100 * v:.2f}%"  # noqa: E731
    pts = lambda v: f"{100 * v:+.2f}"  # noqa: E731
    src = d["rows"][0]
    lines = [f"# Pruning runs of one source side by side ({d['benchmark']})", "",
             f"Accuracy on {d['n_test']:,} test images ({d['test_source']}). Latency: every ONNX file re-timed "
             f"together on host-ort, {d['threads']} thread(s), batch 1, {d['rounds']} interleaved rounds × "
             f"{d['repeats']} runs; speed-up = median over rounds of source / pruned (p10–p90 of the rounds in "
             "brackets). The control is the unpruned "
             f"source fine-tuned as many epochs with the same recipe ([`{d['control']}`]({d['control']})); "
             "'unmatched' marks a run that trained another number of epochs or ended at another learning rate "
             "(final lr: the peak rate of its final fine-tune, `--final-lr`).", "",
             "| network | blocks removed | channel rounds | epochs | final lr | test acc. | vs source | vs control | "
             "MACs | params | latency ms | speed-up (this timing) | speed-up (its run) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in d["rows"]:
        is_run = "run_speedup" in r
        lat = f"{r['latency_ms']:.3f}" if r["latency_ms"] is not None else "(as source)"
        lines.append(
            f"| {r['label']} | {', '.join(b.rpartition('.')[2] for b in r.get('blocks_removed', [])) or '–'} | "
            f"{r.get('channel_rounds', '–')} | {r['epochs']}{'' if not is_run or r['matched'] else ' (unmatched)'} | "
            f"{format(r['final_lr'], 'g') if is_run else '–'} | "
            f"{pct(r['accuracy'])} | {pts(r['accuracy'] - d['source_accuracy']) if r is not src else '–'} | "
            f"{pts(r['accuracy'] - d['control_accuracy']) if is_run else '–'} | {r['macs'] / 1e6:.1f} M | "
            f"{r['params']:,} | {lat} | {r['speedup']:.2f}×"
            + (" ({:.2f}–{:.2f})".format(*r["speedup_p10_p90"]) if "speedup_p10_p90" in r else "") + " | "
            f"{format(r['run_speedup'], '.2f') + '×' if is_run else '–'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
