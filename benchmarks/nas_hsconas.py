"""HSCoNAS on CIFAR-10 under a host-ort latency budget: Pareto fronts and the shrink / channel-scaling ablation.

Five methods, each given the same number of evaluated candidates and the same seeds, all scored by one shared
supernet and screened by one shared latency model:

    hsconas-full        constrained evolution with progressive space shrinking + channel scaling of the winner
    hsconas-no-shrink   the same with `shrink=False` (its winner is channel-scaled too)
    hsconas-no-scaling  no channel scaling at all: the search proposes the first feasible child instead of the
                        one that spends the most budget (`spend_budget=False`), and its winner is not widened
    random              uniform random search (rejection sampling of the predicted-feasible region)
    evolution           regularized (aging) evolution

    python benchmarks/nas_hsconas.py --quick            # smoke run, ~5 min on 1 thread
    python benchmarks/nas_hsconas.py                    # resnet_cifar, warm-started: ~45 min on 1 thread
    python benchmarks/nas_hsconas.py --retrain-epochs 5 # then: also retrain the chosen models (reuses the rest)
    python benchmarks/nas_hsconas.py --retime           # then, on a quiet machine: time the chosen models again
    python benchmarks/nas_hsconas.py --retrain-epochs 5 --retrain-shard 1/2 &   # the retraining split over two
    python benchmarks/nas_hsconas.py --retrain-epochs 5 --retrain-shard 2/2     # processes (one core each), then
    python benchmarks/nas_hsconas.py --retrain-epochs 5                         # the report reuses their runs
    python benchmarks/nas_hsconas.py --space mbconv --out benchmarks/results/nas_hsconas-mbconv \
        --work-dir benchmarks/runs/nas_hsconas-mbconv    # the MobileNetV2-layout space, supernet from scratch

Setup: the bundled CIFAR-10 subset (5,000 train / 1,000 test) at 32×32, split 90/10 into train / validation.
Space `resnet_cifar` (default: per-stage depth 1–4 × width 0.5–2.0 around ResNet-20) or `mbconv` (MobileNetV2
layout; per layer k3/5/7 × e3/6 or skip, per-stage widths). The supernet is trained once by uniform single-path
sampling, or by the sandwich rule with `--path-sampling sandwich` (`train.fit_supernet`, 1 thread); for
`resnet_cifar` it starts from the zoo's trained ResNet-20 and
distils from it, as the `devicefit run` search stage does (from scratch, 3–4 epochs leave a supernet near
chance on 4,500 images: measured train loss 2.31 after 3 epochs for `mbconv`, so its proxy ranks nothing).
A candidate's score is the *supernet proxy*: validation accuracy of its path after BatchNorm re-estimation (the
search stage's scorer, cached by architecture in one file, so a path is scored once whichever method proposes
it). Latency: fp32 ONNX Runtime on `host-ort`, predicted by the search stage's `LatencyModel` (a·MACs +
b·params + c, fitted to measured random architectures of the space). Peak SRAM: analytic int8 peak activation
bytes (`space.analytic_cost`). The budget is a quantile of the predicted latency of uniform random architectures
(default the median: mid-range). The width-scaled hand-designed family of the space (ResNet-20, or MobileNetV2:
every layer k3_e6) is scored by the same proxy. At the end each method's chosen architecture is *measured*;
with `--retrain-epochs` the best model of each HSCoNAS variant and of random, and the family members on either
side of the budget, are trained from scratch with the supernet's recipe (`--retrain-seeds` seeds each) and their
test accuracy reported (trained accuracy), each pick beside the family interpolated to its predicted latency.
With `--retrain-top K` each method's K best chosen models train with seed 0 and the one with the best validation
accuracy after training gets the other seeds (`retrain()`); `benchmarks/nas_proxy_noise.py` re-scores and
re-tests such a run on more images.

Everything lands in a work dir (benchmarks/runs/nas_hsconas[-quick]/): supernet checkpoint, latency samples,
scores, one optuna study and one JSON per method × seed; a rerun skips what is finished. Writes
benchmarks/results/nas_hsconas[-quick].{json,md} and docs/images/nas-hsconas[-quick].png.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from devicefit import data as D
from devicefit import models as M
from devicefit import search as S
from devicefit import train as T
from devicefit.core import ArchSpec, atomic_write_json, atomic_write_text, machine_info, read_json, read_jsonl
from devicefit.hardware import get_target
from devicefit.pipelines._search_cost import LatencyModel, _measured_latency_model, measure_spec_latency
from devicefit.pipelines._stage_search import _SubnetScorer as Scorer
from devicefit.space import WIDTH_CHOICES, get_space

ROOT = Path(__file__).resolve().parent
SHAPE = (3, 32, 32)
# search key -> (registered method, options)
SEARCHES = {"hsconas": ("hsconas", {"shrink": True}), "hsconas-no-shrink": ("hsconas", {"shrink": False}),
            "hsconas-no-scaling": ("hsconas", {"shrink": True, "spend_budget": False}),
            "random": ("random", {}), "evolution": ("evolution", {})}
# variant -> (search key, channel scaling of the winner)
VARIANTS = {"hsconas-full": ("hsconas", True), "hsconas-no-shrink": ("hsconas-no-shrink", True),
            "hsconas-no-scaling": ("hsconas-no-scaling", False), "random": ("random", False),
            "evolution": ("evolution", False)}
# searches whose winner some variant widens (`channel_scaling` is computed for these only)
SCALED = {key for key, scaled in VARIANTS.values() if scaled}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def tag(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:8]


class Costs:
    """The space's analytic costs (MACs, params, int8 peak SRAM of `space.analytic_cost`), cached per architecture;
    every other attribute is the space's."""

    def __init__(self, space: Any) -> None:
        self.space, self._cache = space, {}  # type: ignore[var-annotated]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.space, name)

    def analytic_cost(self, spec: ArchSpec, **_: Any) -> dict[str, int]:
        if spec not in self._cache:
            self._cache[spec] = self.space.analytic_cost(spec, num_classes=10, input_shape=SHAPE)
        return self._cache[spec]  # type: ignore[no-any-return]

    def peak_sram_bytes(self, spec: ArchSpec) -> int:
        return int(self.analytic_cost(spec)["peak_activation_bytes_int8"])


def repo_relative(value: Any) -> Any:
    """Paths (or path strings) inside the repository as relative paths: results carry no machine paths."""
    if isinstance(value, (Path, str)) and Path(value).is_absolute() and Path(value).is_relative_to(ROOT.parent):
        return os.path.relpath(value, ROOT.parent)
    return value


def hand_family(space: Any) -> tuple[str, list[tuple[float, ArchSpec]]]:
    """The hand-designed family the search is compared with, width-scaled inside the space: MobileNetV2 (every
    layer k3_e6, no skips) in `mbconv`, ResNet-20 (three blocks per stage) in `resnet_cifar`."""
    n = len(space.stages)
    if space.name.startswith("mbconv"):
        return "MobileNetV2", [(w, space.validate(ArchSpec(space.name, {
            "ops": tuple("k3_e6" for _ in range(space.n_layers)), "widths": (w,) * n}))) for w in WIDTH_CHOICES]
    from devicefit.space import RESNET_WIDTHS

    return "ResNet-20", [(w, space.validate(ArchSpec(space.name, {"depths": (3,) * n, "widths": (w,) * n})))
                         for w in RESNET_WIDTHS]


# -- shared parts: data, supernet, latency model, budget ------------------------------------------------------


def load_data(args: Any) -> tuple[Any, Any, Any]:
    full = D.load_dataset("cifar10", "train", args.data_dir)
    train, val = D.split_train_val(full, 0.1, seed=0)
    rng = np.random.default_rng(0)  # random subsets: the split is stored class by class
    if args.n_train and args.n_train < len(train):
        train = train.subset(np.sort(rng.permutation(len(train))[: args.n_train]))
    if args.n_val and args.n_val < len(val):
        val = val.subset(np.sort(rng.permutation(len(val))[: args.n_val]))
    return train, val, D.load_dataset("cifar10", "test", args.data_dir)


def recipe(args: Any, epochs: int) -> T.TrainConfig:
    return T.TrainConfig(epochs=epochs, batch_size=args.batch_size, lr=0.05, warmup_epochs=min(1.0, epochs / 4),
                         threads=1, seed=0)


def train_supernet(space: Any, train: Any, args: Any, work: Path) -> tuple[Any, Path, dict[str, Any]]:
    """Uniform single-path training; with `--warm-start RUN` (a trained zoo run the space holds, as the
    `devicefit run` search stage does) the supernet starts from its weights and distils from it."""
    cfg = recipe(args, args.supernet_epochs)
    kw = {"weight_sharing": args.weight_sharing} if args.space == "mbconv" else {}
    net = space.supernet(num_classes=10, input_shape=SHAPE, **kw)
    teacher, start = None, None
    if args.warm_start:
        run = Path(args.warm_start)
        model_spec = ArchSpec.from_dict(read_json(run / "spec.json"))
        teacher = T.load_weights(M.build(model_spec), run / "model.pt").eval()
        start = space.from_model_spec(model_spec)
        net.inherit_(teacher, start)
    body = [args.space, dataclasses.asdict(cfg), len(train), str(args.warm_start or "")]
    if args.path_sampling != "uniform":  # uniform keeps the tag of the runs made before this option
        body += [args.path_sampling, args.n_random]
    run_dir = work / f"supernet-{tag(body + ([kw['weight_sharing']] if kw.get('weight_sharing') == 'per_op' else []))}"
    log(f"supernet: {args.supernet_epochs} epoch(s) of {T.PATH_SAMPLINGS.get(args.path_sampling).describe} "
        f"training on {len(train)} images "
        f"in {run_dir}" + (f" from {args.warm_start} ({start}), distilling from it" if start else ""))
    t0 = time.perf_counter()
    res = T.fit_supernet(net, train, cfg, run_dir=run_dir, progress=False, log=lambda s: log(f"supernet {s}"),
                         augment_default=D.DATASETS.get("cifar10").augment, teacher=teacher,
                         path_sampling=args.path_sampling, n_random=args.n_random)
    return net, run_dir, {"warm_start": repo_relative(args.warm_start or ""), "train_seconds": res.train_seconds,
                          "path_sampling": args.path_sampling, "n_random": args.n_random,
                          "wall_s_this_run": time.perf_counter() - t0,
                          "epochs": args.supernet_epochs, "batch_size": cfg.batch_size, "lr": cfg.lr,
                          "history": [h.to_dict() for h in res.history]}


def fit_latency(costs: Costs, args: Any, work: Path) -> LatencyModel:
    """The search stage's latency model, fitted once to `--latency-samples` measured architectures (samples
    appended as measured; the fitted model is stored, so a rerun does not re-measure and shift the budget)."""
    path = work / f"latency-{tag([args.space, args.precision, args.latency_samples, args.repeats])}.jsonl"
    fitted = path.with_suffix(".model.json")
    if fitted.is_file():
        d = json.loads(fitted.read_text())
        log(f"latency model: fitted before ({fitted.name})")
        return LatencyModel(d["target"], d["precision"], tuple(d["coef_ms"]), tuple(d["samples"]),
                            tuple(d["loo_rel_error"]))
    log(f"latency model: measuring {args.latency_samples} architectures on host-ort ({args.precision}) -> {path}")
    lm = _measured_latency_model(path, costs, get_target("host-ort"), args.precision, args.latency_samples, 0,
                                 num_classes=10, input_shape=SHAPE, repeats=args.repeats, log=log)
    atomic_write_json(fitted, lm.to_dict())
    return lm


def predictor(costs: Costs, lm: Any) -> Callable[[ArchSpec], float]:
    cache: dict[ArchSpec, float] = {}

    def latency_ms(spec: ArchSpec) -> float:
        if spec not in cache:
            c = costs.analytic_cost(spec)
            cache[spec] = float(lm.predict(c["macs"], c["params"]))
        return cache[spec]

    return latency_ms


def choose_budget(space: Any, latency_ms: Callable[[ArchSpec], float], args: Any) -> dict[str, float]:
    rng = np.random.default_rng(12345)
    lat = np.array([latency_ms(space.sample(rng)) for _ in range(500)])
    lo, hi = latency_ms(space.smallest()), latency_ms(space.largest())
    budget = args.latency_ms or float(np.quantile(lat, args.budget_quantile))
    return {"latency_ms": budget, "quantile": float(np.mean(lat <= budget)), "smallest_ms": lo, "largest_ms": hi,
            "random_p10_ms": float(np.quantile(lat, 0.1)), "random_p90_ms": float(np.quantile(lat, 0.9))}


# -- one search (method × seed) --------------------------------------------------------------------------------


def search_options(key: str, args: Any) -> dict[str, Any]:
    method, opts = SEARCHES[key]
    if method == "hsconas":
        return opts | {"init": args.init, "parents": max(2, args.init // 2), "stage_trials": args.stage_trials,
                       "elite": max(2, args.init // 2)}
    if method == "evolution":
        return {"population": args.init, "sample_size": max(1, args.init // 4)}
    return {}


def run_one(key: str, seed: int, ctx: dict[str, Any], args: Any) -> dict[str, Any]:
    space, budget, score, lat = ctx["space"], ctx["budget"]["latency_ms"], ctx["score"], ctx["latency_ms"]
    method, opts = SEARCHES[key][0], search_options(key, args)
    cfg = S.SearchConfig(method=method, n_trials=args.trials, seed=seed, metric="accuracy", options=opts,
                         constraints=(S.Constraint("latency_ms", budget, lower_bound=ctx["budget"]["smallest_ms"]),))
    fingerprint = [ctx["supernet_tag"], budget, cfg.fingerprint(space), args.bn_batches, len(ctx["score"].val),
                   ctx["scaling_rank"]]
    name = f"{key}-seed{seed}-{tag(fingerprint)}"
    out = ctx["work"] / f"search-{name}.json"
    if out.is_file():
        log(f"{key} seed {seed}: done before ({out.name})")
        doc = json.loads(out.read_text())
        if key in SCALED and doc.get("best") and doc["scaling"].get("max_score_drop") != ctx["scaling_max_drop"]:
            doc["scaling"] = channel_scaling(ArchSpec.from_dict(doc["best"]["spec"]), ctx)  # the search stands
            atomic_write_json(out, doc)
        return doc | {"reused": True}

    def objective(spec: ArchSpec) -> dict[str, float]:
        return {"accuracy": score(spec), "latency_ms": lat(spec),
                "peak_sram_bytes": float(ctx["costs"].peak_sram_bytes(spec))}

    def on_trial(done: Any) -> None:
        m = done.metrics
        log(f"{key} seed {seed} trial {done.number + 1}/{args.trials}: proxy acc {100 * m['accuracy']:.1f}%, "
            f"{m['latency_ms']:.3f} ms, {m['peak_sram_bytes'] / 1024:.0f} KiB")

    t0 = time.perf_counter()
    res = S.run_search(space, objective, cfg, estimate=lambda s: {"latency_ms": lat(s)},
                       storage=ctx["work"] / f"study-{name}.db", study_name=name, on_trial=on_trial)
    doc = res.to_dict() | {"key": key, "search_wall_s": time.perf_counter() - t0}
    if key in SCALED and res.best is not None:
        doc["scaling"] = channel_scaling(res.best.spec, ctx)
    atomic_write_json(out, doc)
    return doc


def channel_scaling(spec: ArchSpec, ctx: dict[str, Any]) -> dict[str, Any]:
    """`search.scale_channels` of the winner into the budget, widenings ranked by the supernet proxy as the
    `devicefit run` search stage does it (or, `--scaling-rank cost`, by least added latency: no extra proxy
    evaluations); before/after figures and the proxy evaluations it spent beyond the search's."""
    budget, lat, score, costs = ctx["budget"]["latency_ms"], ctx["latency_ms"], ctx["score"], ctx["costs"]
    scored_before = len(score.cache)
    rank = score if ctx["scaling_rank"] == "proxy" else None  # None: the widening that adds the least latency
    drop = ctx["scaling_max_drop"] if rank is not None else None
    scaled, steps = S.scale_channels(ctx["space"], spec, lambda s: lat(s) / budget, 1.0, score=rank,
                                     max_score_drop=drop)
    point = {s: {"spec": s.to_dict(), "accuracy": score(s), "latency_ms": lat(s),
                 "peak_sram_bytes": costs.peak_sram_bytes(s)} for s in (spec, scaled)}
    log(f"channel scaling: {spec['widths']} -> {scaled['widths']} in {len(steps)} step(s), proxy acc "
        f"{100 * point[spec]['accuracy']:.1f}% -> {100 * point[scaled]['accuracy']:.1f}%")
    return {"before": point[spec], "after": point[scaled], "steps": steps, "max_score_drop": drop,
            "extra_proxy_evaluations": len(score.cache) - scored_before}


# -- figures of merit ------------------------------------------------------------------------------------------


def hypervolume(points: list[tuple[float, float]], acc_ref: float, cost_ref: float) -> float:
    """Area dominated by (accuracy ↑, cost ↓) points inside the box accuracy > acc_ref, cost < cost_ref."""
    pts = sorted((c, a) for a, c in points if a > acc_ref and c < cost_ref)
    area, best = 0.0, acc_ref
    for c, a in pts:  # ascending cost: each point adds the strip of accuracy it gains over the cheaper ones
        if a > best:
            area += (a - best) * (cost_ref - c)
            best = a
    return area


def chosen_point(doc: dict[str, Any], scaling: bool) -> dict[str, Any] | None:
    if doc["best"] is None:
        return None
    if scaling:
        return doc["scaling"]["after"]
    best = doc["best"]
    return {"spec": best["spec"], **{k: best["metrics"][k] for k in ("accuracy", "latency_ms", "peak_sram_bytes")}}


def points_of(doc: dict[str, Any], scaling: bool) -> list[dict[str, float]]:
    pts = [h["metrics"] for h in doc["evaluated"] if h["feasible"]]
    chosen = chosen_point(doc, scaling)
    return pts + ([chosen] if scaling and chosen else [])


def mean_std(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": len(v)}


def summarise(variant: str, docs: list[dict[str, Any]], ctx: dict[str, Any]) -> dict[str, Any]:
    scaling, budget, sram_ref = VARIANTS[variant][1], ctx["budget"]["latency_ms"], ctx["sram_ref"]
    chosen = [chosen_point(d, scaling) for d in docs]
    hv_lat = [hypervolume([(p["accuracy"], p["latency_ms"] / budget) for p in points_of(d, scaling)], 0.1, 1.0)
              for d in docs]
    hv_sram = [hypervolume([(p["accuracy"], p["peak_sram_bytes"] / sram_ref) for p in points_of(d, scaling)],
                           0.1, 1.0) for d in docs]
    violations = sum(h["metrics"]["latency_ms"] > budget for d in docs for h in d["evaluated"])
    violations += sum(c is not None and c["latency_ms"] > budget for c in chosen)
    out = {"variant": variant, "search": VARIANTS[variant][0], "channel_scaling": scaling, "seeds": len(docs),
           "evaluated_per_seed": [d["n_evaluated"] for d in docs],
           "best_proxy_accuracy": mean_std([c["accuracy"] for c in chosen if c]),
           "chosen_latency_ms": mean_std([c["latency_ms"] for c in chosen if c]),
           "hv_latency": mean_std(hv_lat), "hv_sram": mean_std(hv_sram), "violations": int(violations),
           "infeasible_results": sum(c is None for c in chosen), "chosen": chosen,
           "search_wall_s": mean_std([d["search_wall_s"] for d in docs])}
    if "shrink" in docs[0]["strategy"]:
        out["shrink_final_fraction"] = [d["strategy"]["shrink"][-1]["fraction_of_full"] for d in docs]
        out["shrink_stages"] = [d["strategy"]["shrink"] for d in docs]
    if scaling:
        sc = [d["scaling"] for d in docs]
        out["scaling"] = {f"{when}_{m}": mean_std([s[when][m] for s in sc]) for when in ("before", "after")
                          for m in ("accuracy", "latency_ms", "peak_sram_bytes")}
        out["scaling"] |= {"steps": [len(s["steps"]) for s in sc],
                           "extra_proxy_evaluations": [s.get("extra_proxy_evaluations") for s in sc],
                           "widths": [[s[w]["spec"]["params"]["widths"] for w in ("before", "after")] for s in sc]}
    return out


def dominated(point: dict[str, float], pts: list[dict[str, float]], cost: str) -> bool:
    return any(p["accuracy"] >= point["accuracy"] and p[cost] <= point[cost]
               and (p["accuracy"] > point["accuracy"] or p[cost] < point[cost]) for p in pts)


# -- confirmation: the hand-designed family, measured latency, retraining ---------------------------------


def family_points(ctx: dict[str, Any]) -> list[dict[str, Any]]:
    """The width-scaled hand-designed family in the space (`family`), proxy-scored like every candidate."""
    out = []
    name, members = hand_family(ctx["space"])
    for w, spec in members:
        out.append({"width": w, "spec": spec.to_dict(), "accuracy": ctx["score"](spec),
                    "latency_ms": ctx["latency_ms"](spec), "peak_sram_bytes": ctx["costs"].peak_sram_bytes(spec)})
        log(f"{name} ×{w}: proxy acc {100 * out[-1]['accuracy']:.1f}%, {out[-1]['latency_ms']:.3f} ms predicted")
    return out


def measurer(ctx: dict[str, Any], args: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Measured batch-1 latency (median of 3 fresh sessions) of a spec dict, cached in the work dir. With
    `--retime` the cache is not read: every network is measured again and the new figure appended (the last
    line of a spec wins on the next read)."""
    path = ctx["work"] / f"measured-{tag([args.precision, args.repeats])}.jsonl"
    done = {} if args.retime else {r["spec_json"]: r for r in read_jsonl(path) if "spec_json" in r}

    def measure(spec_dict: dict[str, Any]) -> dict[str, Any]:
        spec = ArchSpec.from_dict(spec_dict)
        if spec.to_json() not in done:
            m = measure_spec_latency(ctx["space"], spec, get_target("host-ort"), args.precision, num_classes=10,
                                     input_shape=SHAPE, repeats=args.repeats, sessions=3)
            done[spec.to_json()] = {"spec_json": spec.to_json(), **m}
            with path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(done[spec.to_json()]) + "\n")
        return {k: v for k, v in done[spec.to_json()].items() if k != "spec_json"}

    return measure


def measure_chosen(summary: dict[str, Any], family: list[dict[str, Any]], ctx: dict[str, Any], args: Any) -> None:
    measure = measurer(ctx, args)
    for row in summary.values():
        for c in row["chosen"]:
            if c is not None:
                c["measured"] = measure(c["spec"])
        ratios = [c["measured"]["latency_ms"] / c["latency_ms"] for c in row["chosen"] if c]
        row["measured_over_predicted"] = mean_std(ratios)
        row["measured_over_budget"] = mean_std([c["measured"]["latency_ms"] / ctx["budget"]["latency_ms"]
                                                for c in row["chosen"] if c])
        log(f"{row['variant']}: measured / predicted latency of the chosen models "
            f"{row['measured_over_predicted']['mean']:.3f} ± {row['measured_over_predicted']['std']:.3f}")
    for f in family:
        f["measured"] = measure(f["spec"])


def top_chosen(row: dict[str, Any], k: int) -> list[dict[str, Any]]:
    """The `k` best distinct chosen models (one per search seed) of a method's summary row, by proxy accuracy."""
    seen: set[str] = set()
    out = []
    for c in sorted((c for c in row["chosen"] if c), key=lambda c: -c["accuracy"]):
        key = ArchSpec.from_dict(c["spec"]).to_json()
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out[:k]


def retrain(summary: dict[str, Any], family: list[dict[str, Any]], data: tuple[Any, Any, Any], ctx: dict[str, Any],
            args: Any) -> list[dict[str, Any]]:
    """Train from scratch (supernet recipe, `--retrain-epochs`) the `--retrain-top` best chosen models of each method
    in `--retrain-variants` (default: the HSCoNAS variants and random), and the family members on either side of the
    budget; report test accuracy on the held-out test split, averaged over seeds.

    Two stages. (a) Every candidate trains with seed 0, the family with seeds 0 … `--retrain-seeds` − 1. (b) Per
    method, the candidate with the best seed-0 *validation* accuracy (the 500 proxy images, not the test split) is
    the method's selected model and trains with the remaining seeds. With `--retrain-top 1` this is the old rule:
    the proxy's best model, all seeds. Each row is set against the family at its predicted latency (linear between
    the two retrained members; outside them, the nearer one). With `--retrain-shard K/N` only the K-th of every N
    unfinished run dirs of the first unfinished stage is trained, and nothing is returned (the report comes from a
    run without it; with K > 1 run the shards again once stage (a) is done)."""
    budget = ctx["budget"]["latency_ms"]
    fam = hand_family(ctx["space"])[0]
    under = [f for f in family if f["latency_ms"] <= budget]
    over = [f for f in family if f["latency_ms"] > budget]
    bracket = ([under[-1]] if under else []) + ([over[0]] if over else [])
    cands = [(v, i + 1, c) for v in args.retrain_variants
             for i, c in enumerate(top_chosen(summary[v], args.retrain_top))]
    train = data[0]
    cfgs = [dataclasses.replace(recipe(args, args.retrain_epochs), seed=seed) for seed in range(args.retrain_seeds)]

    def run_dir(point: dict[str, Any], seed: int) -> Path:
        return scratch_dir(ctx["work"], "retrain", ArchSpec.from_dict(point["spec"]), cfgs[seed], len(train))

    def finished(point: dict[str, Any], seed: int) -> bool:
        return (run_dir(point, seed) / "train.json").exists()

    stage_a = [(f"{v} #{i}", c, 0) for v, i, c in cands] + [
        (f"{fam} ×{f['width']}", f, seed) for f in bracket for seed in range(args.retrain_seeds)]
    if args.retrain_shard:  # deal the unfinished run dirs round-robin, so the shards get equal work
        k, n = args.retrain_shard
        todo = {run_dir(p, seed): (name, p, seed) for name, p, seed in stage_a if not finished(p, seed)}
        stage = "a"
        if not todo:
            sel = select_by_val(cands, lambda c: read_json(run_dir(c, 0) / "train.json")["metrics"]["final"]["val_acc"],
                                args.retrain_variants)
            todo = {run_dir(c, seed): (f"{v} #{i}", c, seed) for v, (i, c) in sel.items()
                    for seed in range(1, args.retrain_seeds) if not finished(c, seed)}
            stage = "b"
        share = list(todo)[k - 1::n]
        log(f"retrain shard {k}/{n}, stage {stage}: {len(share)} of {len(todo)} unfinished trainings: "
            + ", ".join(f"{todo[d][0]} seed {todo[d][2]}" for d in share))
        for d in share:
            name, p, seed = todo[d]
            train_from_scratch(ctx["space"], ArchSpec.from_dict(p["spec"]), cfgs[seed], data, d, name)
        return []
    runs: dict[Path, tuple[float, float, float]] = {}

    def trained(name: str, p: dict[str, Any], seed: int) -> tuple[float, float, float]:
        d = run_dir(p, seed)
        if d not in runs:
            runs[d] = train_from_scratch(ctx["space"], ArchSpec.from_dict(p["spec"]), cfgs[seed], data, d, name)
        return runs[d]

    for name, p, seed in stage_a:
        trained(name, p, seed)
    sel = select_by_val(cands, lambda c: runs[run_dir(c, 0)][1], args.retrain_variants)
    out = []
    for v, i, c in cands:
        seeds = range(args.retrain_seeds) if sel[v][0] == i else range(1)
        res = [trained(f"{v} #{i}", c, seed) for seed in seeds]
        out.append(row_of(v, i, c, res, args, family=False, selected=sel[v][0] == i))
    for f in bracket:
        res = [trained(f"{fam} ×{f['width']}", f, seed) for seed in range(args.retrain_seeds)]
        out.append(row_of(f"{fam} ×{f['width']}", 0, f, res, args, family=True, selected=False))
    fam_rows = sorted((r for r in out if r["family"]), key=lambda r: r["predicted_latency_ms"])
    for r in out:
        if not r["family"] and fam_rows:
            r["family_at_same_latency"] = interpolate(fam_rows, r["predicted_latency_ms"])
            r["delta_vs_family"] = r["test_accuracy"] - r["family_at_same_latency"]
    return out


def select_by_val(cands: list[tuple[str, int, dict[str, Any]]], val0: Callable[[dict[str, Any]], float],
                  variants: list[str]) -> dict[str, tuple[int, dict[str, Any]]]:
    """Per method: (rank, candidate) of its candidate with the best seed-0 validation accuracy `val0(candidate)`.
    Ties go to the better proxy."""
    out = {}
    for v in variants:
        mine = [(i, c) for vv, i, c in cands if vv == v]
        if mine:
            out[v] = max(mine, key=lambda ic: (val0(ic[1]), -ic[0]))
    return out


def row_of(variant: str, rank: int, point: dict[str, Any], res: list[tuple[float, float, float]], args: Any, *,
           family: bool, selected: bool) -> dict[str, Any]:
    ops = point["spec"]["params"].get("ops", [])
    return {"name": variant if family else f"{variant} #{rank}", "variant": variant, "proxy_rank": rank,
            "family": family, "selected": selected, "spec": point["spec"], "proxy_accuracy": point["accuracy"],
            "predicted_latency_ms": point["latency_ms"], "epochs": args.retrain_epochs,
            "seeds": list(range(len(res))), "test_accuracy_by_seed": [r[0] for r in res],
            "val_accuracy_by_seed": [r[1] for r in res], "test_accuracy": float(np.mean([r[0] for r in res])),
            "val_accuracy": float(np.mean([r[1] for r in res])), "train_seconds": sum(r[2] for r in res),
            "ops_count": {o: ops.count(o) for o in sorted(set(ops))}}


def scratch_dir(work: Path, prefix: str, spec: ArchSpec, cfg: T.TrainConfig, n_train: int) -> Path:
    """The run dir of `spec` trained from scratch with `cfg` on `n_train` images."""
    return work / f"{prefix}-{tag([spec.to_dict(), dataclasses.asdict(cfg), n_train])}"


def train_from_scratch(space: Any, spec: ArchSpec, cfg: T.TrainConfig, data: tuple[Any, Any, Any], run_dir: Path,
                       name: str) -> tuple[float, float, float]:
    """Train `spec` from scratch (seeded by `cfg.seed`) in `run_dir` (resumed, or loaded when finished); return
    (test accuracy, final validation accuracy, training seconds)."""
    train, val, test = data
    torch.manual_seed(cfg.seed)
    model = space.build(spec, num_classes=10, input_shape=SHAPE)
    log(f"training {name} ({cfg.epochs} epochs, seed {cfg.seed}) in {run_dir}")
    res = T.fit(model, train, cfg, val_ds=val, run_dir=run_dir, progress=False, log=lambda m: log(f"train {m}"),
                augment_default=D.DATASETS.get("cifar10").augment)
    acc = float(T.evaluate(model, test, batch_size=64)["accuracy"])
    val = float(res.final["val_acc"])
    log(f"{name} seed {cfg.seed}: test accuracy {100 * acc:.1f}%, validation {100 * val:.1f}%")
    return acc, val, res.train_seconds


def interpolate(rows: list[dict[str, Any]], latency_ms: float) -> float:
    """Test accuracy of the family at `latency_ms`: linear between its members (sorted by latency), the
    nearer end outside them."""
    xs = [r["predicted_latency_ms"] for r in rows]
    return float(np.interp(latency_ms, xs, [r["test_accuracy"] for r in rows]))


# -- outputs ----------------------------------------------------------------------------------------------------


def front(pts: list[dict[str, float]], cost: str) -> list[dict[str, float]]:
    out: list[dict[str, float]] = []
    for p in sorted(pts, key=lambda p: (p[cost], -p["accuracy"])):
        if not out or p["accuracy"] > out[-1]["accuracy"]:
            out.append(p)
    return out


def plot(doc: dict[str, Any], docs: dict[str, list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budget, fam = doc["budget"]["latency_ms"], doc["family"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    for ax, cost, scale, label in ((axes[0], "latency_ms", 1.0, "predicted latency, host-ort (ms)"),
                                   (axes[1], "peak_sram_bytes", 1 / 1024, "analytic int8 peak SRAM (KiB)")):
        for i, (variant, row) in enumerate(doc["methods"].items()):
            color = f"C{i}"
            pts = [p for d in docs[VARIANTS[variant][0]] for p in points_of(d, row["channel_scaling"])]
            fr = front(pts, cost)
            ax.step([p[cost] * scale for p in fr], [100 * p["accuracy"] for p in fr], where="post", color=color,
                    ls=("-", "--", ":", "-.", "-", "--")[i], lw=2.2 - 0.3 * i, label=f"{variant} front (all seeds)")
            ch = [c for c in row["chosen"] if c]
            ax.scatter([c[cost] * scale for c in ch], [100 * c["accuracy"] for c in ch], color=color, marker="*",
                       s=90, edgecolor="k", linewidth=0.5, zorder=5, label=f"{variant} chosen")
        ax.plot([f[cost] * scale for f in fam], [100 * f["accuracy"] for f in fam], "k--o", ms=5,
                label=f"{doc['family_name']} ×{fam[0]['width']:g}…×{fam[-1]['width']:g}")
        if cost == "latency_ms":
            ax.axvline(budget, color="r", ls=":", label=f"budget {budget:.3f} ms")
        ax.set_xlabel(label)
        ax.set_ylabel("supernet proxy accuracy (val., %)")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="center right")
    fig.suptitle(f"HSCoNAS ablation on CIFAR-10 subset, {doc['space']} space, {doc['settings']['precision']} host-ort; "
                 f"{doc['settings']['trials']} candidates × {len(doc['settings']['seeds'])} seeds per method "
                 "(proxy = supernet accuracy, not trained)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.83, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def pm(s: dict[str, float], scale: float = 1.0, fmt: str = ".1f") -> str:
    return f"{scale * s['mean']:{fmt}} ± {scale * s['std']:{fmt}}"


def plot_link(image: Path, md_dir: Path) -> str:
    """A Markdown line showing `image` from a file in `md_dir` (so every plot is reachable from its table)."""
    return f"\n![accuracy against latency]({Path(os.path.relpath(image.resolve(), md_dir.resolve())).as_posix()})\n"


def markdown(doc: dict[str, Any]) -> str:
    s, b = doc["settings"], doc["budget"]
    lines = [f"# HSCoNAS on CIFAR-10 (`{doc['space']}`, host-ort {s['precision']} latency budget "
             f"{b['latency_ms']:.3f} ms)", "",
             f"{doc['data']['train']} train / {doc['data']['val']} validation images of the bundled CIFAR-10 subset "
             f"at 32×32; supernet {s['supernet_epochs']} epoch(s) of "
             f"{T.PATH_SAMPLINGS.get(s.get('path_sampling', 'uniform')).describe} training "
             f"({doc['supernet']['train_seconds']:.0f} s); {s['trials']} evaluated candidates per method and seed, "
             f"seeds {s['seeds']}. Budget = {b['quantile']:.0%} quantile of the predicted latency of random "
             f"architectures (space: {b['smallest_ms']:.3f}–{b['largest_ms']:.3f} ms). Latency model: "
             f"{doc['latency_model']['samples']} measured architectures, leave-one-out median |error| "
             f"{100 * doc['latency_model']['loo_median_abs_rel_error']:.1f}%. **Proxy** = supernet validation "
             "accuracy of the path after BN re-estimation (not a trained accuracy). HV = hypervolume of the "
             "feasible evaluated points (accuracy above 0.1 chance × cost below the reference: latency / budget, "
             f"peak SRAM / {doc['sram_ref_bytes'] / 1024:.0f} KiB, the space's largest); mean ± std over seeds. "
             "Proposals are drawn from generators seeded by (seed, trial), so for one seed every method starts from "
             "the same random architectures (common random numbers). Channel scaling's proxy evaluations come on "
             "top of the search's candidates (column below). "
             f"Wall {doc['wall_s'] / 60:.1f} min this run ({doc['searches_reused']} of {doc['searches_total']} "
             "searches reused from the work dir) on 1 torch thread"
             f"{'; chosen and family networks re-timed (--retime)' if doc['settings'].get('retime') else ''}"
             " (shared machine: latencies noisy).", "",
             "| method | best proxy acc. (%) | chosen pred. latency (ms) | measured / predicted | HV acc–latency | "
             f"HV acc–SRAM | violations | {doc['family_name']} dominated (latency / SRAM) | "
             "space left after shrinking |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for v, r in doc["methods"].items():
        shrink = ", ".join(f"{f:.2g}" for f in r.get("shrink_final_fraction", [])) or "—"
        lines.append(f"| {v} | {pm(r['best_proxy_accuracy'], 100)} | {pm(r['chosen_latency_ms'], 1, '.3f')} | "
                     f"{pm(r['measured_over_predicted'], 1, '.3f')} | {pm(r['hv_latency'], 1, '.4f')} | "
                     f"{pm(r['hv_sram'], 1, '.4f')} | {r['violations']} | {r['family_dominated']} / "
                     f"{r['family_dominated_sram']} of {len(doc['family'])} | {shrink} |")
    guard = s.get("scaling_max_drop")
    guard_txt = "" if guard is None else (f", widening stopped once the proxy fell more than {100 * guard:g} points "
                                          "below the best of the walk, whose widths are kept")
    lines += ["", f"Channel scaling of the winner (widenings ranked by {s['scaling_rank']}{guard_txt}), mean ± std "
              "over seeds; extra proxy evaluations = scorings beyond the search's candidates:", "",
              "| method | proxy acc. before → after (%) | pred. latency before → after (ms) | steps | "
              "extra proxy evaluations | widths |", "|---|---|---|---|---|---|"]
    for v, r in doc["methods"].items():
        if "scaling" in r:
            sc = r["scaling"]
            lines.append(f"| {v} | {pm(sc['before_accuracy'], 100)} → {pm(sc['after_accuracy'], 100)} | "
                         f"{pm(sc['before_latency_ms'], 1, '.3f')} → {pm(sc['after_latency_ms'], 1, '.3f')} | "
                         f"{sc['steps']} | {sc['extra_proxy_evaluations']} | "
                         f"{'; '.join(f'{a} → {b_}' for a, b_ in sc['widths'])} |")
    lines += ["", f"{doc['family_name']} family in the space, width-scaled:", "",
              "| width | proxy acc. (%) | pred. latency (ms) | measured (ms) | peak SRAM (KiB) |",
              "|---:|---:|---:|---:|---:|"]
    for f in doc["family"]:
        lines.append(f"| {f['width']} | {100 * f['accuracy']:.1f} | {f['latency_ms']:.3f} | "
                     f"{f['measured']['latency_ms']:.3f} | {f['peak_sram_bytes'] / 1024:.0f} |")
    if doc["retrain"]:
        lines += retrain_markdown(doc)
    return "\n".join(lines) + "\n"


def kernel_mix(r: dict[str, Any]) -> str:
    """'k3/k5/k7/skip · e3/e6' layer counts of a retrained row's ops."""
    n = r.get("ops_count") or {}

    def count(pred: Callable[[str], bool]) -> int:
        return sum(v for k, v in n.items() if pred(k))
    return (f"{count(lambda o: o.startswith('k3'))}/{count(lambda o: o.startswith('k5'))}/"
            f"{count(lambda o: o.startswith('k7'))}/{n.get('skip', 0)} · "
            f"{count(lambda o: o.endswith('e3'))}/{count(lambda o: o.endswith('e6'))}")


def kendall(xs: list[float], ys: list[float]) -> float:
    """Kendall's tau of two rankings (nan for fewer than 3 items)."""
    from scipy.stats import kendalltau

    return float(kendalltau(xs, ys).statistic) if len(xs) > 2 else float("nan")


def rank_agreement(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
    """Kendall tau between `key` and seed-0 test accuracy over the distinct retrained candidates (not the family)."""
    uniq = {ArchSpec.from_dict(r["spec"]).to_json(): r for r in rows if not r["family"]}
    xs = [r[key] if key != "val0" else r["val_accuracy_by_seed"][0] for r in uniq.values()]
    return {"tau": kendall(xs, [r["test_accuracy_by_seed"][0] for r in uniq.values()]), "n": len(xs)}


def retrain_markdown(doc: dict[str, Any]) -> list[str]:
    rows, top = doc["retrain"], doc["settings"].get("retrain_top", 1)
    lines = ["", "Retrained from scratch (trained accuracy on the held-out test split, mean over seeds; the family at "
             "the same predicted latency is linear between its two retrained members"
             + (f"; each method's {top} best chosen models by proxy trained with seed 0, the one with the best seed-0 "
                "validation accuracy (500 images, the proxy's split) selected (✓) and trained with the other seeds"
                if top > 1 else "") + "). Layers: k3/k5/k7/skip · e3/e6 counts of the searchable layers.", "",
             "| model | epochs | proxy acc. (%) | val. acc. seed 0 (%) | test acc. (%) (by seed) | "
             "pred. latency (ms) | family at same latency (%) | Δ (pt) | layers |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        by_seed = ", ".join(f"{100 * a:.1f}" for a in r.get("test_accuracy_by_seed", [r["test_accuracy"]]))
        val0 = f"{100 * r['val_accuracy_by_seed'][0]:.1f}" if r.get("val_accuracy_by_seed") else "—"
        fam_txt = (f"{100 * r['family_at_same_latency']:.1f} | {100 * r['delta_vs_family']:+.1f}"
                   if "family_at_same_latency" in r else "— | —")
        mark = " ✓" if r.get("selected") and top > 1 else ""
        lines.append(f"| {r['name']}{mark} | {r['epochs']} | {100 * r['proxy_accuracy']:.1f} | {val0} | "
                     f"{100 * r['test_accuracy']:.1f} ({by_seed}) | {r['predicted_latency_ms']:.3f} | {fam_txt} | "
                     f"{kernel_mix(r) if r.get('ops_count') else '—'} |")
    if top > 1:
        lines += ["", "Per method, the proxy's pick (#1) against the validation-selected model (test accuracy, mean "
                  "over the seeds each got; Δ against the family at the same predicted latency):", "",
                  "| method | proxy's pick: test (%) / Δ | selected: rank, test (%) / Δ |", "|---|---|---|"]
        for v in dict.fromkeys(r["variant"] for r in rows if not r["family"]):
            first = next(r for r in rows if r["variant"] == v and r["proxy_rank"] == 1)
            sel = next(r for r in rows if r["variant"] == v and r["selected"])
            lines.append(f"| {v} | {100 * first['test_accuracy']:.1f} / {100 * first['delta_vs_family']:+.1f} | "
                         f"#{sel['proxy_rank']}, {100 * sel['test_accuracy']:.1f} / "
                         f"{100 * sel['delta_vs_family']:+.1f} |")
        px, va = rank_agreement(rows, "proxy_accuracy"), rank_agreement(rows, "val0")
        lines += ["", f"Rank agreement with seed-0 test accuracy over the {px['n']} distinct retrained candidates "
                  f"(Kendall tau): supernet proxy {px['tau']:+.2f}, trained validation accuracy {va['tau']:+.2f}."]
    return lines


# -- driver -----------------------------------------------------------------------------------------------------

RETRAINABLE = ("hsconas-full", "hsconas-no-shrink", "hsconas-no-scaling", "random", "evolution")
QUICK = {"n_train": 500, "n_val": 100, "supernet_epochs": 1, "trials": 8, "seeds": [0, 1], "init": 4,
         "stage_trials": 2, "latency_samples": 6, "repeats": 20, "scaling_rank": "cost", "retrain_epochs": 1}


def shard(text: str) -> tuple[int, int]:
    """`--retrain-shard K/N` → (K, N) with 1 ≤ K ≤ N."""
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N such as 1/2, got {text!r}") from None
    if not 1 <= k <= n:
        raise argparse.ArgumentTypeError(f"expected 1 <= K <= N, got {text!r}")
    return k, n


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=f"smoke run (~5 min): {QUICK}")
    ap.add_argument("--data-dir", default=None, help="full CIFAR-10 copy (default: the bundled subset)")
    ap.add_argument("--n-train", type=int, default=0, help="training images (0 = all 4,500 of the subset split)")
    ap.add_argument("--n-val", type=int, default=0, help="validation images for the proxy (0 = all 500)")
    ap.add_argument("--space", choices=("resnet_cifar", "mbconv"), default="resnet_cifar")
    ap.add_argument("--warm-start", default=None,
                    help="trained zoo run the space holds: the supernet starts from it and distils from it "
                         "(default for resnet_cifar: benchmarks/runs/resnet20-cifar10-subset; 'none' to train "
                         "from scratch)")
    ap.add_argument("--supernet-epochs", type=int, default=4)
    ap.add_argument("--path-sampling", choices=T.PATH_SAMPLINGS.names(), default="uniform",
                    help="supernet paths per step: uniform, or sandwich (largest + smallest + --n-random)")
    ap.add_argument("--n-random", type=int, default=1, help="uniform paths per sandwich step")
    ap.add_argument("--weight-sharing", choices=("ofa", "per_op"), default="ofa",
                    help="mbconv supernet weight layout (runs before 2026-11-22 evening used per_op)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--bn-batches", type=int, default=2, help="batches of --batch-size for BN re-estimation")
    ap.add_argument("--trials", type=int, default=60, help="evaluated candidates per method and seed")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--init", type=int, default=20, help="random initial population (hsconas, evolution)")
    ap.add_argument("--stage-trials", type=int, default=15, help="hsconas trials per shrink stage")
    ap.add_argument("--precision", choices=("fp32", "int8"), default="fp32", help="deployed precision on host-ort")
    ap.add_argument("--latency-samples", type=int, default=20, help="measured architectures for the latency model")
    ap.add_argument("--repeats", type=int, default=50, help="ORT runs per latency figure")
    ap.add_argument("--budget-quantile", type=float, default=0.5,
                    help="budget = this quantile of random architectures' predicted latency")
    ap.add_argument("--latency-ms", type=float, default=None, help="an explicit budget instead of the quantile")
    ap.add_argument("--scaling-rank", choices=("proxy", "cost"), default="proxy",
                    help="rank channel-scaling widenings by supernet proxy (as `devicefit run`) or least latency")
    ap.add_argument("--scaling-max-drop", type=float, default=None,
                    help="with proxy ranking: stop widening once the proxy falls more than this (a fraction) below "
                         "the best seen and keep the best widths of the walk, as `devicefit search` does "
                         "(default: no guard, spend the budget)")
    ap.add_argument("--retrain-epochs", type=int, default=0, help="retrain the chosen models (0 = no)")
    ap.add_argument("--retrain-seeds", type=int, default=1, help="training seeds per retrained model")
    ap.add_argument("--retrain-top", type=int, default=1,
                    help="retrain each method's K best chosen models (by proxy) with seed 0 and keep the one with the "
                         "best validation accuracy, which alone gets the other seeds (default 1: the proxy's pick)")
    ap.add_argument("--retrain-variants", nargs="+", choices=RETRAINABLE, default=list(RETRAINABLE[:4]),
                    help="methods whose best chosen model is retrained (beside the family members around the budget)")
    ap.add_argument("--retrain-shard", type=shard, default=None, metavar="K/N",
                    help="train only the K-th of N interleaved shares of the retraining jobs (model × seed) and "
                         "stop without a report; run K = 1 … N side by side, then once without this option")
    ap.add_argument("--retime", action="store_true",
                    help="measure the chosen and family networks again (e.g. on a quiet machine) instead of reading "
                         "the cached figures; everything else is reused from the work dir")
    ap.add_argument("--work-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.quick:
        explicit = {a.dest for a in ap._actions if f"--{a.dest.replace('_', '-')}" in sys.argv}
        for k, v in QUICK.items():
            if k not in explicit:
                setattr(args, k, v)
    if args.warm_start is None and args.space == "resnet_cifar":
        args.warm_start = str(ROOT / "runs" / "resnet20-cifar10-subset")
    if args.warm_start == "none":
        args.warm_start = None
    suffix = "-quick" if args.quick else ""
    args.work_dir = args.work_dir or ROOT / "runs" / f"nas_hsconas{suffix}"
    args.out = args.out or ROOT / "results" / f"nas_hsconas{suffix}"
    return args


def shared_context(args: Any) -> tuple[dict[str, Any], tuple[Any, Any, Any], dict[str, Any]]:
    space = get_space(args.space)
    costs, work = Costs(space), args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    data = load_data(args)
    lm = fit_latency(costs, args, work)
    latency_ms = predictor(costs, lm)
    budget = choose_budget(space, latency_ms, args)
    log(f"budget: {budget['latency_ms']:.3f} ms predicted ({budget['quantile']:.0%} of random architectures fit; "
        f"space {budget['smallest_ms']:.3f}–{budget['largest_ms']:.3f} ms)")
    net, sn_dir, sn_info = train_supernet(space, data[0], args, work)
    score = Scorer(net, data[0], data[1], bn_batches=args.bn_batches, batch_size=args.batch_size, eval_batch_size=64,
                   path=sn_dir / f"scores-bn{args.bn_batches}-val{len(data[1])}.jsonl", seed=0)
    ctx = {"space": space, "costs": costs, "work": work, "score": score, "latency_ms": latency_ms, "budget": budget,
           "scaling_rank": args.scaling_rank, "scaling_max_drop": args.scaling_max_drop, "supernet_tag": sn_dir.name,
           "sram_ref": costs.peak_sram_bytes(costs.largest())}
    return ctx, data, {"latency_model": lm.to_dict(), "supernet": sn_info}


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    ctx, data, info = shared_context(args)
    docs = {key: [run_one(key, seed, ctx, args) for seed in args.seeds] for key in SEARCHES}
    summary = {v: summarise(v, docs[key], ctx) for v, (key, _) in VARIANTS.items()}
    fam_points = family_points(ctx)
    for row in summary.values():
        pts = [p for d in docs[row["search"]] for p in points_of(d, row["channel_scaling"])]
        row["family_dominated"] = sum(dominated(f, pts, "latency_ms") for f in fam_points)
        row["family_dominated_sram"] = sum(dominated(f, pts, "peak_sram_bytes") for f in fam_points)
    measure_chosen(summary, fam_points, ctx, args)
    retrained = retrain(summary, fam_points, data, ctx, args) if args.retrain_epochs else []
    if args.retrain_shard:
        log(f"retrain shard {args.retrain_shard[0]}/{args.retrain_shard[1]} done; run once without "
            "--retrain-shard for the report")
        return
    lm = info["latency_model"]
    doc = {"benchmark": "nas_hsconas", "settings": {k: repo_relative(v)
                                                    for k, v in vars(args).items() if k not in ("data_dir",)},
           "data": {"train": len(data[0]), "val": len(data[1]), "test": len(data[2]), "source": data[0].source},
           "budget": ctx["budget"], "sram_ref_bytes": ctx["sram_ref"], "supernet": info["supernet"],
           "latency_model": {k: lm[k] for k in ("coef_ms", "terms", "loo_median_abs_rel_error",
                                                "loo_max_abs_rel_error", "method")} | {"samples": len(lm["samples"])},
           "proxy": f"supernet validation accuracy after BN re-estimation on {args.bn_batches}×{args.batch_size} "
                    "training images (not a trained accuracy)",
           "methods": summary, "family": fam_points, "family_name": hand_family(ctx["space"])[0], "space": args.space,
           "retrain": retrained,
           "searches": {k: [{kk: d[kk] for kk in ("seed", "n_evaluated", "best", "strategy", "search_wall_s")}
                            for d in v] for k, v in docs.items()},
           "searches_total": sum(len(v) for v in docs.values()),
           "searches_reused": sum(d.get("reused", False) for v in docs.values() for d in v),
           "wall_s": time.perf_counter() - t0, "machine": machine_info()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out.with_suffix(".json"), doc)
    image = ROOT.parent / "docs" / "images" / f"{args.out.name.replace('_', '-')}.png"
    plot(doc, docs, image)
    text = markdown(doc) + plot_link(image, args.out.parent)
    atomic_write_text(args.out.with_suffix(".md"), text)
    print(text, flush=True)


if __name__ == "__main__":
    main()
