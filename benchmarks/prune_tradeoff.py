"""Depth or width: from a trained source, every residual block bypassed and every prunable layer thinned by one
channel group, one change at a time, each timed beside the source in one interleaved run and scored by the
cross-entropy it adds on 512 training images (no fine-tuning). Latency saved per loss added, and per MAC
removed, say which kind of cut buys speed more cheaply on this machine.

    python benchmarks/prune_tradeoff.py benchmarks/runs/resnet20-cifar10-full --data-dir ../shared/data \\
        --name prune-r20-tradeoff

Channel groups are the target's (`hardware.channel_multiple`, with `channel_floor` below it), as
`devicefit prune --set prune.round_to=auto` prunes. Writes benchmarks/results/<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from devicefit import compress as C
from devicefit import data as D
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
    ap.add_argument("--data-dir", default="../shared/data", help="full dataset copies ('' = the bundled subset)")
    ap.add_argument("--images", type=int, default=512, help="training images the loss is measured on")
    ap.add_argument("--rounds", type=int, default=11, help="interleaved timing rounds")
    ap.add_argument("--repeats", type=int, default=50, help="timed runs per model per round")
    ap.add_argument("--target", default="host-ort")
    ap.add_argument("--name", default="prune-tradeoff", help="results stem")
    return ap.parse_args()


def candidates(model: nn.Module, shape: tuple[int, ...], target: str) -> dict[str, tuple[str, nn.Module]]:
    """{label: (kind, network)}: each removable block bypassed, each prunable layer one channel group thinner."""
    out: dict[str, tuple[str, nn.Module]] = {
        f"block {p}": ("block", C.bypass_blocks(model, [p])) for p in C.removable_blocks(model)}
    prune = C.PruneConfig(round_to=channel_multiple(target), round_floor=channel_floor(target))
    pruner = C.StructuredPruner(prune)
    for layer, channels in C.prunable_layers(model, shape).items():
        step = C.one_group_channels(channels, prune)
        if step:
            res = pruner.fit(model, shape, layer_ratios={layer: step / channels}).result_
            if res.macs_after < res.macs_before:  # a group coupled to an unprunable layer stays whole
                out[f"layer {layer} −{step} of {channels}"] = ("channels", res.model)
    return out


def main() -> None:
    args = parse()
    t0 = time.perf_counter()
    src = load_source(CompressJobConfig(source=str(args.source), method="prune", run_dir="unused"))
    model, shape = src.model.eval(), tuple(src.spec["input_shape"])
    train = D.load_dataset(src.data.name, "train", args.data_dir or None, **src.data.options)
    ds = D.calibration_split(train, min(args.images, len(train)), seed=0)
    x, y = D.to_float_tensor(ds, ds.x), torch.as_tensor(ds.y, dtype=torch.long)
    batches = [(x[i:i + 128], y[i:i + 128]) for i in range(0, len(y), 128)]
    base_loss, base_macs = C.mean_loss(model, batches), analyze(model, shape).macs
    cands = candidates(model, shape, args.target)
    print(f"{len(cands)} candidates; timing {args.rounds} interleaved rounds x {args.repeats} runs", flush=True)
    m = measure_interleaved({"source": model, **{k: net for k, (_, net) in cands.items()}}, args.target,
                            input_shape=shape, rounds=args.rounds, repeats=args.repeats, threads=1)
    rows = []
    for label, (kind, net) in cands.items():
        speedup = m.ratio("source", label)
        macs = analyze(net, shape).macs
        added = C.mean_loss(net, batches) - base_loss
        saved = 1.0 - 1.0 / speedup  # fraction of the source's latency saved
        macs_saved = 1.0 - macs / base_macs
        rows.append({"candidate": label, "kind": kind, "macs": macs, "macs_saved": macs_saved,
                     "speedup": speedup, "latency_saved": saved, "loss_added": added,
                     "saved_per_loss": saved / max(added, 1e-4), "saved_per_mac_saved": saved / macs_saved,
                     "ratio_p10_p90": [float(np.percentile(np.asarray(m.rounds_ms["source"]) / np.asarray(
                         m.rounds_ms[label]), q)) for q in (10, 90)]})
    rows.sort(key=lambda r: -r["saved_per_loss"])
    summary = {kind: {"n": len(rs), "median_saved_per_loss": float(np.median([r["saved_per_loss"] for r in rs])),
                      "median_saved_per_mac_saved": float(np.median([r["saved_per_mac_saved"] for r in rs])),
                      "median_latency_saved": float(np.median([r["latency_saved"] for r in rs]))}
               for kind in ("block", "channels") if (rs := [r for r in rows if r["kind"] == kind])}
    doc = {"benchmark": args.name, "source": args.source.name, "base_loss": base_loss, "base_macs": base_macs,
           "images": len(y), "target": args.target, "timing": dict(m.method), "rows": rows, "summary": summary,
           "source_ms": m.median_ms("source"), "wall_s": time.perf_counter() - t0, "machine": machine_info()}
    write_result(ROOT / "results" / args.name, doc, markdown(doc))


def markdown(d: dict[str, Any]) -> str:
    t = d["timing"]
    lines = [f"# Depth or width on {d['machine'].get('cpu_model', '?')} ({d['benchmark']})", "",
             f"Source `{d['source']}`: {d['base_macs'] / 1e6:.1f} M MACs, {d['source_ms']:.3f} ms, cross-entropy "
             f"{d['base_loss']:.4f} on {d['images']} training images. Each candidate is one change to the source, "
             f"not fine-tuned; all timed together on {d['target']} ({t['threads']} thread, batch 1, {t['rounds']} "
             f"interleaved rounds × {t['repeats']} runs; speed-up: median of per-round ratios, p10–p90 beside it).",
             "", "| candidate | MACs saved | latency saved | speed-up (p10–p90) | loss added | latency saved per loss "
             "| latency saved per MAC saved |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in d["rows"]:
        lo, hi = r["ratio_p10_p90"]
        lines.append(f"| {r['candidate']} | {100 * r['macs_saved']:.1f}% | {100 * r['latency_saved']:.1f}% | "
                     f"{r['speedup']:.3f}× ({lo:.3f}–{hi:.3f}) | {r['loss_added']:+.4f} | {r['saved_per_loss']:.2f} | "
                     f"{r['saved_per_mac_saved']:.2f} |")
    lines += ["", "| kind | candidates | median latency saved | median latency saved per loss | median latency saved "
              "per MAC saved |", "|---|---:|---:|---:|---:|"]
    for kind, s in d["summary"].items():
        lines.append(f"| {kind} | {s['n']} | {100 * s['median_latency_saved']:.1f}% | {s['median_saved_per_loss']:.2f} "
                     f"| {s['median_saved_per_mac_saved']:.2f} |")
    lines += ["", f"Machine: {d['machine'].get('cpu_model', '?')}, {d['machine'].get('usable_cpus', '?')} CPUs; "
              f"{d['wall_s']:.0f} s. Loss added below 1e-4 counts as 1e-4 in the per-loss column.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
