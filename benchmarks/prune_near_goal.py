"""How far latency-driven pruning overshoots its goal, with and without the near-goal rules: the same trained
source, the same residual blocks removed first, then channel rounds until a paired speed-up goal, repeated
with the rules off (global and uniform candidates only, chosen by their MACs, every figure taken at face
value), and on (single-layer one-group candidates too, every candidate timed beside the source and the smallest
cut measured at the goal kept, figures within 10% of the goal timed again with 15 more rounds), and with the
rules on but candidates chosen by their MACs. No
fine-tuning: the rounds' decisions depend on timing and MACs only. At the end every final network is re-timed
together beside the source, in one interleaved run, to say what each really reached.

    python benchmarks/prune_near_goal.py benchmarks/runs/resnet20-cifar10-full --speedup 2 --repeats-each 3 \\
        --blocks features.2,features.8,features.1,features.5 --name prune-r20-near-goal

Channel groups are the target's (`round_to=auto`, as `devicefit prune --set prune.round_to=auto`). Writes
benchmarks/results/<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from devicefit import compress as C
from devicefit.core import machine_info
from devicefit.hardware import channel_floor, channel_multiple, measure_interleaved
from devicefit.nn import analyze
from devicefit.pipelines._compress_job import CompressJobConfig, load_source

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prune_report import write_result

ROOT = Path(__file__).resolve().parent


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("source", type=Path, help="a trained run directory")
    ap.add_argument("--speedup", type=float, default=2.0, help="the paired speed-up goal")
    ap.add_argument("--blocks", default="", help="comma-separated residual blocks bypassed before the rounds")
    ap.add_argument("--repeats-each", type=int, default=3, help="pruning runs per setting (alternating)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds per pruning round (the "
                                                          "prune job's latency_rounds)")
    ap.add_argument("--runs", type=int, default=50, help="timed runs per model per timing round")
    ap.add_argument("--retime-rounds", type=int, default=21, help="interleaved rounds of the final re-timing")
    ap.add_argument("--target", default="host-ort")
    ap.add_argument("--name", default="prune-near-goal", help="results stem")
    return ap.parse_args()


def settings(args: argparse.Namespace) -> dict[str, C.LatencyPruneConfig]:
    prune = C.PruneConfig(round_to=channel_multiple(args.target), round_floor=channel_floor(args.target))
    on = C.LatencyPruneConfig(speedup=args.speedup, target=args.target, prune=prune, rounds=args.rounds,
                              repeats=args.runs)
    return {"rules off": dataclasses.replace(on, layer_steps=False, confirm_within=0.0, measure_candidates=False),
            "MAC-steered layer steps + confirmation": dataclasses.replace(on, measure_candidates=False),
            "rules on": on}


def main() -> None:
    args = parse()
    t0 = time.perf_counter()
    src = load_source(CompressJobConfig(source=str(args.source), method="prune", run_dir="unused"))
    model, shape = src.model.eval(), tuple(src.spec["input_shape"])
    blocks = [b for b in args.blocks.split(",") if b]
    start = C.bypass_blocks(model, blocks).eval() if blocks else None
    finals: dict[str, Any] = {}
    runs = []
    for rep in range(args.repeats_each):
        order = list(settings(args).items())
        for label, cfg in order if rep % 2 == 0 else order[::-1]:
            t = time.perf_counter()
            net, rec = C.prune_to_latency(model, shape, cfg, start=start)
            key = f"{label} #{rep + 1}"
            finals[key] = net
            hist = rec["history"]
            runs.append({"run": key, "setting": label, "rounds": len(hist) - 1, "reached": rec["reached"],
                         "in_run_speedup": rec["speedup"], "macs": analyze(net, shape).macs,
                         "modes": [h.get("mode") for h in hist[1:]], "layers": [h.get("layer") for h in hist[1:]],
                         "confirmed": sum("confirmed" in h for h in hist), "wall_s": time.perf_counter() - t,
                         "history": [{k: v for k, v in h.items() if k not in ("rounds_ms", "candidates")}
                                     for h in hist]})
            print(f"{key}: {len(hist) - 1} rounds, {runs[-1]['macs'] / 1e6:.1f} M MACs, in-run "
                  f"{rec['speedup']:.2f}x", flush=True)
    m = measure_interleaved({"source": model, **finals}, args.target, input_shape=shape, rounds=args.retime_rounds,
                            repeats=100, threads=1)
    for r in runs:
        ratios = np.asarray(m.rounds_ms["source"]) / np.asarray(m.rounds_ms[r["run"]])
        r["retimed_speedup"] = float(np.median(ratios))
        r["retimed_p10_p90"] = [float(np.percentile(ratios, q)) for q in (10, 90)]
    summary = {label: {"mean_rounds": float(np.mean([r["rounds"] for r in rs])),
                       "mean_macs": float(np.mean([r["macs"] for r in rs])),
                       "mean_retimed_speedup": float(np.mean([r["retimed_speedup"] for r in rs])),
                       "reached_retimed": sum(r["retimed_speedup"] >= args.speedup for r in rs), "n": len(rs)}
               for label in settings(args) if (rs := [r for r in runs if r["setting"] == label])}
    doc = {"benchmark": args.name, "source": args.source.name, "goal_speedup": args.speedup, "blocks": blocks,
           "source_macs": analyze(model, shape).macs, "start_macs": analyze(start, shape).macs if start else None,
           "settings": {k: dataclasses.asdict(v) for k, v in settings(args).items()}, "runs": runs,
           "summary": summary, "retiming": dict(m.method), "wall_s": time.perf_counter() - t0,
           "machine": machine_info()}
    write_result(ROOT / "results" / args.name, doc, markdown(doc))


def markdown(d: dict[str, Any]) -> str:
    t = d["retiming"]
    lines = [f"# Latency-driven pruning near its goal ({d['benchmark']})", "",
             f"Source `{d['source']}` ({d['source_macs'] / 1e6:.1f} M MACs)"
             + (f", blocks {', '.join(d['blocks'])} bypassed first ({d['start_macs'] / 1e6:.1f} M MACs)"
                if d["blocks"] else "")
             + f"; goal {d['goal_speedup']:g}× paired speed-up; no fine-tuning. Re-timed: all final networks beside "
             f"the source, {t['rounds']} interleaved rounds × {t['repeats']} runs, {t['threads']} thread, batch 1.",
             "", "| run | rounds | chosen steps | MACs | in-run speed-up | re-timed speed-up (p10–p90) | confirmed "
             "rounds |", "|---|---:|---|---:|---:|---:|---:|"]
    for r in d["runs"]:
        steps = ", ".join(f"{m}" + (f" `{x}`" if x else "") for m, x in zip(r["modes"], r["layers"], strict=True))
        lo, hi = r["retimed_p10_p90"]
        lines.append(f"| {r['run']} | {r['rounds']} | {steps or '–'} | {r['macs'] / 1e6:.2f} M | "
                     f"{r['in_run_speedup']:.2f}× | {r['retimed_speedup']:.2f}× ({lo:.2f}–{hi:.2f}) | "
                     f"{r['confirmed']} |")
    lines += ["", "| setting | runs | mean rounds | mean MACs | mean re-timed speed-up | re-timed at or over the "
              "goal |",
              "|---|---:|---:|---:|---:|---:|"]
    for label, s in d["summary"].items():
        lines.append(f"| {label} | {s['n']} | {s['mean_rounds']:.1f} | {s['mean_macs'] / 1e6:.2f} M | "
                     f"{s['mean_retimed_speedup']:.2f}× | {s['reached_retimed']} of {s['n']} |")
    lines += ["", f"Machine: {d['machine'].get('cpu_model', '?')}, {d['machine'].get('usable_cpus', '?')} CPUs; "
              f"{d['wall_s'] / 60:.0f} min.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
