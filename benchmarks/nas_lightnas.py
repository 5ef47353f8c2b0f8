"""LightNAS on CIFAR-10 in the `mbconv` space with `host-ort` latency targets at three levels: one search per
target, then the extracted model's latency is *measured* in ONNX Runtime and compared with its target; with
`--epochs` > 0 each searched model and the width-scaled MobileNetV2 family are trained from scratch under the
same recipe and tested on the held-out test split.

    python benchmarks/nas_lightnas.py --data-dir ../shared/data --search-epochs 10 --epochs 30   # quiet machine
    python benchmarks/nas_lightnas.py --n-train 256 --search-epochs 2 --epochs 0 --repeats 20   # smoke

Latency model: a per-layer lookup table measured here with ONNX Runtime's profiler (one all-same-op network
per op, per-block kernel time; the rest of the end-to-end time is the constant), made differentiable over the
one-hot op choice (`LinearCost`). Targets: the 25/50/75% points between the table's cheapest and dearest
network. Writes benchmarks/results/nas_lightnas.{json,md} (or --out) atomically.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from devicefit import data as D
from devicefit import models as M
from devicefit import train as T
from devicefit.core import ArchSpec, atomic_write_json, atomic_write_text, machine_info
from devicefit.hardware import aggregate_by_block, layer_latencies, measure_latency
from devicefit.search import LightNAS, LightNASConfig, LinearCost
from devicefit.space import MBCONV_OPS, MBConvSupernet, get_space

RESULTS = Path(__file__).resolve().parent / "results"
LEVELS = (0.25, 0.50, 0.75)


def latency_lut(space: Any, widths: tuple[float, ...], repeats: int) -> tuple[float, np.ndarray, list[float]]:
    """(constant ms, (layers, ops) ms table, end-to-end ms per all-op network) from ORT per-block profiles."""
    table = np.zeros((space.n_layers, len(MBCONV_OPS)))
    overheads, e2e = [], []
    first = [f for _, f in space.layer_stage()]
    for j, op in enumerate(MBCONV_OPS):
        ops = tuple("k3_e3" if (op == "skip" and f) else op for f in first)
        spec = ArchSpec(space.name, {"ops": ops, "widths": widths})
        net = space.build(spec).eval()
        prof = layer_latencies(net, input_shape=space.input_shape, repeats=repeats, warmup=5, threads=1)
        blocks = {b.block: b.median_ms for b in aggregate_by_block(prof, depth=2)}
        block_ids = iter(range(1, 1 + sum(o != "skip" for o in ops)))
        layer_ms = 0.0
        for i, o in enumerate(ops):
            if o == "skip":
                continue
            ms = blocks.get(f"features.{next(block_ids)}", 0.0)
            layer_ms += ms
            if o == op:
                table[i, j] = ms
        overheads.append(prof.end_to_end_ms - layer_ms)
        e2e.append(prof.end_to_end_ms)
    table[first, MBCONV_OPS.index("skip")] = np.nan
    return float(np.median(overheads)), table, e2e


def batches(ds: Any, batch_size: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(D.BatchLoader(ds, batch_size, shuffle=True, augment="none", seed=seed))


def measured_ms(net: torch.nn.Module, shape: tuple[int, ...], repeats: int) -> dict[str, Any]:
    r = measure_latency(net.eval(), "host-ort", input_shape=shape, repeats=repeats, warmup=10, threads=1, rounds=3)
    return {"median_ms": r.median_ms, "p10_ms": r.p10_ms, "p90_ms": r.p90_ms, "cv": r.cv, "stable": r.stable}


def train_and_test(net: torch.nn.Module, train_ds: Any, test_ds: Any, epochs: int, seed: int) -> float | None:
    if epochs <= 0:
        return None
    T.fit(net, train_ds, T.TrainConfig(epochs=epochs, batch_size=128, seed=seed, threads=1), progress=False)
    return float(T.evaluate(net, test_ds)["accuracy"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("DEVICEFIT_DATA_DIR"))
    ap.add_argument("--n-train", type=int, default=0, help="use only this many training images (0 = all)")
    ap.add_argument("--search-epochs", type=int, default=10)
    ap.add_argument("--warmup-epochs", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=0, help="retrain epochs per model (0 = no retraining)")
    ap.add_argument("--widths", type=float, default=0.5, help="stage width multiplier during the search")
    ap.add_argument("--repeats", type=int, default=50, help="timed ORT runs per latency round")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "nas_lightnas")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    space = get_space("mbconv")
    widths = tuple(args.widths for _ in space.stages)
    const, table, e2e = latency_lut(space, widths, args.repeats)
    lo = const + np.nanmin(np.where(np.isnan(table), np.inf, table), axis=1).sum()
    hi = const + np.nanmax(table, axis=1).sum()
    full = D.load_dataset("cifar10", "train", args.data_dir)
    tr, val = D.split_train_val(full, 0.1, seed=args.seed)
    if args.n_train:
        tr = tr.subset(np.arange(min(args.n_train, len(tr))))
        val = val.subset(np.arange(min(max(args.n_train // 4, 64), len(val))))
    test = D.load_dataset("cifar10", "test", args.data_dir)
    runs = []
    for level in LEVELS:
        target = float(lo + level * (hi - lo))
        torch.manual_seed(args.seed)
        net = MBConvSupernet(space, num_classes=10).set_active(space.smallest().replace(widths=widths))
        cfg = LightNASConfig(target=target, epochs=args.search_epochs, warmup_epochs=args.warmup_epochs,
                             seed=args.seed)
        ts = time.perf_counter()
        nas = LightNAS(net, LinearCost(const, table), cfg).fit(batches(tr, 64, args.seed), batches(val, 64, 1))
        search_s = time.perf_counter() - ts
        model = net.extract(nas.spec_).eval()
        lat = measured_ms(model, space.input_shape, args.repeats)
        acc = train_and_test(space.build(nas.spec_), tr, test, args.epochs, args.seed)
        runs.append({"level": level, "target_ms": target, "spec": nas.spec_.to_dict(), "predicted_ms": nas.cost_,
                     "measured": lat, "error_vs_target": lat["median_ms"] / target - 1.0, "search_s": search_s,
                     "final_lambda": nas.lambda_, "test_accuracy": acc})
        print(f"target {target:.3f} ms: predicted {nas.cost_:.3f}, measured {lat['median_ms']:.3f} ms "
              f"({100 * runs[-1]['error_vs_target']:+.1f}%), search {search_s:.0f} s", flush=True)
    family = []
    for wm in (0.25, 0.35, 0.5):
        net = M.build(M.default_spec("mobilenet_v2", num_classes=10, input_shape=(3, 32, 32)).replace(width_mult=wm))
        family.append({"width_mult": wm, "measured": measured_ms(net, (3, 32, 32), args.repeats),
                       "test_accuracy": train_and_test(net, tr, test, args.epochs, args.seed)})
    table_json = [[None if np.isnan(v) else v for v in row] for row in table.tolist()]  # JSON has no NaN
    doc = {"benchmark": "nas_lightnas", "settings": vars(args) | {"out": str(args.out), "data_dir": args.data_dir},
           "train_images": len(tr), "val_images": len(val), "lut": {"constant_ms": const, "table_ms": table_json,
                                                                     "all_op_end_to_end_ms": e2e, "lo_ms": lo,
                                                                     "hi_ms": hi},
           "runs": runs, "mobilenet_v2": family, "wall_s": time.perf_counter() - t0, "machine": machine_info()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out.with_suffix(".json"), doc)
    atomic_write_text(args.out.with_suffix(".md"), markdown(doc))
    print(markdown(doc))


def markdown(doc: dict[str, Any]) -> str:
    s = doc["settings"]
    lines = ["# LightNAS on CIFAR-10, mbconv space, host-ort latency targets", "",
             f"{doc['train_images']} training / {doc['val_images']} validation images, {s['search_epochs']} search "
             f"epochs ({s['warmup_epochs']} weight-only), widths {s['widths']}, retrain epochs {s['epochs']}; "
             f"latency: ORT batch 1, 1 thread, median of {s['repeats']} runs (p10–p90); wall {doc['wall_s']:.0f} s.",
             "", "| target (ms) | LUT prediction (ms) | measured (ms) | p10–p90 (ms) | error vs target | search (s) | "
             "test acc. |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in doc["runs"]:
        m = r["measured"]
        acc = "—" if r["test_accuracy"] is None else f"{100 * r['test_accuracy']:.1f}%"
        lines.append(f"| {r['target_ms']:.3f} | {r['predicted_ms']:.3f} | {m['median_ms']:.3f} | "
                     f"{m['p10_ms']:.3f}–{m['p90_ms']:.3f} | {100 * r['error_vs_target']:+.1f}% | "
                     f"{r['search_s']:.0f} | {acc} |")
    lines += ["", "| MobileNetV2 width | measured (ms) | test acc. |", "|---:|---:|---:|"]
    for f in doc["mobilenet_v2"]:
        acc = "—" if f["test_accuracy"] is None else f"{100 * f['test_accuracy']:.1f}%"
        lines.append(f"| {f['width_mult']} | {f['measured']['median_ms']:.3f} | {acc} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
