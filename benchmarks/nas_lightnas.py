"""LightNAS vs a fixed trade-off coefficient: does one search run land on the cost target T?

For several targets T spanning the `mbconv` space's range of MACs (or parameters, or host-ort latency) at
fixed stage widths, one LightNAS run per target (default config: λ by ascent, damping, final repair) is put
side by side with the FBNet / ProxylessNAS loss CE + β·LAT/T at a sweep of fixed β (the same search, λ held
at β, no repair): the baseline needs a β sweep to land within 5 % of T, LightNAS one run.

    python benchmarks/nas_lightnas.py                  # 5 targets, 256 images at 8×8: ~9 minutes, 1 thread
    python benchmarks/nas_lightnas.py --n-train 128                                   # smoke: ~4 minutes
    python benchmarks/nas_lightnas.py --n-train 2000 --image-size 16 --search-epochs 4 --metric params

Setup: CIFAR-10 (the bundled subset), average-pooled to `--image-size` pixels so that the 16-layer supernet
trains in minutes on one core; the supernet is warmed up once (weight-only, uniform paths) and every search
starts from that state. Cost model: the exact per-layer MACs / parameter table of the space at those widths
(`mbconv_cost_table`), or for `--metric latency_ms` a per-layer ORT-profiled latency table (then the
extracted model's latency is also measured; caveat: the table comes from ORT's profiler, whose overhead
inflates the constant, e.g. 0.47 ms vs 0.10 ms measured end to end at 8×8: calibrate before trusting it).
Accuracy is a side figure: the supernet's validation accuracy on the chosen path after a short search, not a
trained model. Writes benchmarks/results/nas_lightnas.{json,md} atomically.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from devicefit import data as D
from devicefit.core import ArchSpec, atomic_write_json, atomic_write_text, machine_info
from devicefit.hardware import aggregate_by_block, layer_latencies, measure_latency
from devicefit.search import LightNAS, LightNASConfig, LinearCost
from devicefit.space import MBCONV_OPS, MBConvSupernet, get_space
from devicefit.space._mbconv_cost import mbconv_cost_table

RESULTS = Path(__file__).resolve().parent / "results"
LEVELS = (0.1, 0.3, 0.5, 0.7, 0.9)
BETAS = (0.001, 0.01, 0.03, 0.1, 0.3, 1.0)
PAPER_RULE = {"lambda_lr": 0.5, "damping": 0.0, "cost_mode": "expected", "repair": False}
TOL = 0.05


def latency_lut(space: Any, widths: tuple[float, ...], shape: tuple[int, ...],
                repeats: int) -> tuple[float, np.ndarray]:
    """(constant ms, (layers, ops) ms table) from ORT per-block profiles of one all-same-op network per op."""
    table = np.zeros((space.n_layers, len(MBCONV_OPS)))
    overheads = []
    first = [f for _, f in space.layer_stage()]
    for j, op in enumerate(MBCONV_OPS):
        ops = tuple("k3_e3" if (op == "skip" and f) else op for f in first)
        net = space.build(ArchSpec(space.name, {"ops": ops, "widths": widths}), input_shape=shape).eval()
        prof = layer_latencies(net, input_shape=shape, repeats=repeats, warmup=5, threads=1)
        blocks = {b.block: b.median_ms for b in aggregate_by_block(prof, depth=2)}
        block_ids = iter(range(1, 1 + sum(o != "skip" for o in ops)))
        layer_ms = 0.0
        for i, o in enumerate(ops):
            if o != "skip":
                ms = blocks.get(f"features.{next(block_ids)}", 0.0)
                layer_ms += ms
                table[i, j] = ms if o == op else table[i, j]
        overheads.append(prof.end_to_end_ms - layer_ms)
    table[first, MBCONV_OPS.index("skip")] = np.nan
    return float(np.median(overheads)), table


def cost_table(space: Any, metric: str, widths: tuple[float, ...], shape: tuple[int, ...],
               repeats: int) -> tuple[float, np.ndarray]:
    if metric == "latency_ms":
        return latency_lut(space, widths, shape, repeats)
    return mbconv_cost_table(space, widths, metric=metric, num_classes=10, input_shape=shape)


def batches(ds: Any, batch_size: int, seed: int, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for x, y in D.BatchLoader(ds, batch_size, shuffle=True, augment="none", seed=seed):
        x = torch.as_tensor(x)
        out.append((F.adaptive_avg_pool2d(x, size) if x.shape[-1] != size else x, torch.as_tensor(y)))
    return out


def warm_up(net: MBConvSupernet, train: list[Any], epochs: int, seed: int) -> dict[str, torch.Tensor]:
    """Weight-only warm-up on uniformly sampled paths (shared by every search); returns the state dict."""
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    rng, active = np.random.default_rng(seed), net.active_
    for _ in range(epochs):
        for x, y in train:
            spec = net.space.sample(rng).replace(widths=active["widths"])
            net.set_active(spec).train()
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.set_active(active)
    return copy.deepcopy(net.state_dict())


def val_accuracy(net: MBConvSupernet, spec: ArchSpec, val: list[Any]) -> float:
    net.set_active(spec).eval()
    with torch.no_grad():
        hits = sum(int((net(x).argmax(1) == y).sum()) for x, y in val)
    return hits / sum(len(y) for _, y in val)


def search(net: MBConvSupernet, state: dict[str, Any], cost: LinearCost, cfg: LightNASConfig,
           train: list[Any], val: list[Any]) -> dict[str, Any]:
    base = net.active_
    net.load_state_dict(state)
    net.set_active(base)
    ts = time.perf_counter()
    nas = LightNAS(net, cost, cfg).fit(train, val)
    wall = time.perf_counter() - ts
    T = cfg.target
    out = {"search_cost_ratio": nas.search_cost_ / T, "cost_ratio": nas.cost_ / T, "repairs": len(nas.repairs_),
           "final_lambda": nas.lambda_, "search_s": wall, "spec": nas.spec_.to_dict(),
           "cost_ratio_trace": [round(h["cost_argmax"] / T, 4) for h in nas.history_],
           "val_accuracy": val_accuracy(net, nas.spec_, val)}
    net.set_active(base)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("DEVICEFIT_DATA_DIR"))
    ap.add_argument("--metric", choices=("macs", "params", "latency_ms"), default="macs")
    ap.add_argument("--n-train", type=int, default=256, help="training images (0 = all)")
    ap.add_argument("--image-size", type=int, default=8, help="inputs average-pooled to this many pixels")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--warmup-epochs", type=int, default=1, help="shared weight-only warm-up epochs")
    ap.add_argument("--search-epochs", type=int, default=2)
    ap.add_argument("--widths", type=float, default=0.5, help="stage width multiplier during the search")
    ap.add_argument("--repeats", type=int, default=50, help="ORT runs per latency figure (latency_ms only)")
    ap.add_argument("--levels", type=float, nargs="+", default=list(LEVELS),
                    help="targets as fractions of the way from the cheapest to the dearest network")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "nas_lightnas")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    space = get_space("mbconv")
    widths = tuple(args.widths for _ in space.stages)
    shape = (3, args.image_size, args.image_size)
    const, table = cost_table(space, args.metric, widths, shape, args.repeats)
    lo = const + float(np.nanmin(np.where(np.isnan(table), np.inf, table), axis=1).sum())
    hi = const + float(np.nanmax(table, axis=1).sum())
    tr, val = D.split_train_val(D.load_dataset("cifar10", "train", args.data_dir), 0.1, seed=args.seed)
    if args.n_train:  # random subsets (the split is stored class by class)
        rng = np.random.default_rng(args.seed)
        tr = tr.subset(np.sort(rng.permutation(len(tr))[: args.n_train]))
        val = val.subset(np.sort(rng.permutation(len(val))[: max(args.n_train // 4, 64)]))
    train_b = batches(tr, args.batch_size, args.seed, args.image_size)
    val_b = batches(val, args.batch_size, args.seed + 1, args.image_size)
    torch.manual_seed(args.seed)
    net = MBConvSupernet(space, num_classes=10, input_shape=shape).set_active(space.smallest().replace(widths=widths))
    tw = time.perf_counter()
    state = warm_up(net, train_b, args.warmup_epochs, args.seed)
    warm_s = time.perf_counter() - tw
    cost = LinearCost(const, table)
    runs = [run_target(net, state, cost, float(lo + level * (hi - lo)), level, args, train_b, val_b, space, shape)
            for level in args.levels]
    table_json = [[None if np.isnan(v) else v for v in row] for row in table.tolist()]  # JSON has no NaN
    doc = {"benchmark": "nas_lightnas", "settings": vars(args) | {"out": _rel(args.out), "data_dir": None},
           "betas": list(BETAS), "tolerance": TOL, "train_images": len(tr), "val_images": len(val),
           "cost_model": {"metric": args.metric, "constant": const, "table": table_json, "lo": lo, "hi": hi},
           "warmup_s": warm_s, "runs": runs, "wall_s": time.perf_counter() - t0, "machine": machine_info()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out.with_suffix(".json"), doc)
    atomic_write_text(args.out.with_suffix(".md"), markdown(doc))
    print(markdown(doc))


def run_target(net: MBConvSupernet, state: dict[str, Any], cost: LinearCost, target: float, level: float,
               args: Any, train_b: list[Any], val_b: list[Any], space: Any, shape: tuple[int, ...]) -> dict[str, Any]:
    common = {"target": target, "epochs": args.search_epochs, "warmup_epochs": 0, "seed": args.seed}
    light = search(net, state, cost, LightNASConfig(**common), train_b, val_b)
    paper = search(net, state, cost, LightNASConfig(**common, **PAPER_RULE), train_b, val_b)
    fixed = [search(net, state, cost, LightNASConfig(**common, lambda_init=b, lambda_lr=0.0, damping=0.0,
                                                      repair=False), train_b, val_b) | {"beta": b}
             for b in BETAS]
    if args.metric == "latency_ms":
        model = net.extract(ArchSpec.from_dict(light["spec"])).eval()
        r = measure_latency(model, "host-ort", input_shape=shape, repeats=args.repeats, warmup=10, threads=1)
        light["measured_ms"] = {"median_ms": r.median_ms, "p10_ms": r.p10_ms, "p90_ms": r.p90_ms}
    hits = [f["beta"] for f in fixed if abs(f["cost_ratio"] - 1) <= TOL]
    best = min(fixed, key=lambda f: abs(f["cost_ratio"] - 1))
    print(f"T={target:.4g} ({level:.0%}): LightNAS search {light['search_cost_ratio']:.3f}, final "
          f"{light['cost_ratio']:.3f} ({light['repairs']} repairs); fixed beta best {best['cost_ratio']:.3f} "
          f"(beta={best['beta']}), {len(hits)}/{len(fixed)} within {TOL:.0%}", flush=True)
    return {"level": level, "target": target, "lightnas": light, "paper_rule": paper, "fixed_beta": fixed,
            "fixed_beta_hits": hits, "fixed_beta_best": {"beta": best["beta"], "cost_ratio": best["cost_ratio"]}}


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path.name


def markdown(doc: dict[str, Any]) -> str:
    s, unit, tol = doc["settings"], doc["cost_model"]["metric"], doc["tolerance"]
    lines = [f"# LightNAS vs fixed β on `mbconv` ({unit} targets), one search run per target", "",
             f"{doc['train_images']} training / {doc['val_images']} validation CIFAR-10 images pooled to "
             f"{s['image_size']}×{s['image_size']}, widths {s['widths']}, {s['warmup_epochs']} shared warm-up + "
             f"{s['search_epochs']} search epochs (batch {s['batch_size']}), seed {s['seed']}; wall "
             f"{doc['wall_s']:.0f} s on 1 thread (shared machine: wall times are indicative). "
             "Cost/T of the final architecture by the exact cost model. "
             "LightNAS = default `LightNASConfig` (search = its argmax before repair); "
             "paper rule = η 0.5, no damping, LAT on softmax(α), no repair; "
             f"fixed β = CE + β·LAT/T, β ∈ {doc['betas']}, no repair. Val. acc. = supernet on the chosen "
             "path after the short search (side figure, near chance at smoke size).", "",
             f"| T ({unit}) | level | LightNAS search cost/T | LightNAS final cost/T | repairs | "
             f"LightNAS val. acc. | paper rule cost/T | best fixed-β cost/T (β) | β within ±{tol:.0%} | "
             "search s (LightNAS) |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in doc["runs"]:
        li, b, hits = r["lightnas"], r["fixed_beta_best"], len(r["fixed_beta_hits"])
        lines.append(f"| {r['target']:.4g} | {r['level']:.0%} | {li['search_cost_ratio']:.3f} | "
                     f"{li['cost_ratio']:.3f} | {li['repairs']} | {100 * li['val_accuracy']:.1f}% | "
                     f"{r['paper_rule']['cost_ratio']:.3f} | {b['cost_ratio']:.3f} ({b['beta']}) | "
                     f"{hits}/{len(r['fixed_beta'])} | {li['search_s']:.0f} |")
    lines += ["", "Fixed-β cost/T per β:", "", "| level | " + " | ".join(f"β={b}" for b in doc["betas"]) + " |",
              "|---:|" + "---:|" * len(doc["betas"])]
    for r in doc["runs"]:
        lines.append(f"| {r['level']:.0%} | " + " | ".join(f"{f['cost_ratio']:.3f}" for f in r["fixed_beta"]) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
