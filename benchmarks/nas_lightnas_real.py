"""LightNAS on CIFAR-10 with measured host-ort latency targets: does one search land on T, and do the searched
models beat the width-scaled MobileNetV2 family at the same measured latency?

    python benchmarks/nas_lightnas_real.py --quick     # smoke, ~5 min on 1 thread (shared VM)
    python benchmarks/nas_lightnas_real.py             # full, resumable: ~45-60 min on a quiet core (estimate)
    python benchmarks/nas_lightnas_real.py --anchor --reuse-from benchmarks/runs/nas_lightnas_real
                                                       # measured anchoring, reusing that run's table and warm-up
    python benchmarks/nas_lightnas_real.py --width 0.75 --anchor --warmup-epochs 30 --search-epochs 8 \
        --reuse-from benchmarks/runs/nas_lightnas_real-w075 --name nas_lightnas_real-w075-long
                                                       # a longer-trained supernet; table and family reused

Steps (each one's result lands in `<work-dir>/state.json`; a rerun with the same settings, or fewer
`--mbv2-widths`, skips finished steps, training resumes from its checkpoint, another setting is refused):
1. latency table: `LatencyTable` (devicefit.search._latency_table) fitted to end-to-end ORT timings (fp32,
   batch 1, 1 thread, 32×32) of `--n-archs` sampled networks of `mbconv` at stage width `--width`, with its
   held-out error (a fit on 80 %, measured on the other 20 %).
2. search: the supernet is warmed up once, weight-only on uniform paths (`--warmup-epochs`, shared by every
   target); then for each target T = lo + level·(hi − lo) (lo/hi: the table's cheapest / dearest network) one
   LightNAS run with the default `LightNASConfig` controller (λ ascent, damping, argmax cost, repair to within
   5 % of T by the table; `--repair-tolerance` changes that) over `--search-epochs` epochs, starting from the
   warmed-up weights.
3. retraining: every searched architecture and the MobileNetV2 family, i.e. the same `mbconv` layout with
   every layer k3_e6 (MobileNetV2's inverted residual, expansion 6, 3×3) at the stage widths `--mbv2-widths`
   (not the zoo's `mobilenet_v2`: its 32-channel stem, expansion-1 first block, 17 blocks and 1280-channel
   head would mix a macro-layout change into the comparison; in the space only the per-layer op differs),
   trained from scratch with one recipe (`devicefit.train.fit`, SGD, cosine, crop+flip, `--train-epochs`) on
   the bundled CIFAR-10 subset and scored on its test split (never seen by the search).
4. final measurement (run before step 3, as soon as the searches end, so that less drift separates it from the
   table's fit): every model's ONNX graph (latency does not depend on weight values: a searched model is the
   architecture LightNAS extracted, then trained) and `--n-drift` of the table's calibration networks, timed in
   `--rounds` interleaved rounds (a fresh ORT session each, fresh random order per round; figure = median
   over rounds). Drift = median over the calibration networks of (re-timed / timed at fit): the machine's
   speed change since the table was fitted. measured/T is reported raw and drift-corrected (÷ drift).
With `--anchor`, each search measures its architecture on the machine (`LightNAS(measure=...)`: every
`--measure-every` architecture steps and in the closing loop after the repair, at most `--max-measurements`
times), so the table's local bias and the machine's drift up to the search are measured away; raw measured/T
is then the figure that counts (dividing by the drift since the table's fit would correct twice).
`--reuse-from DIR` starts a new work dir from another run's latency table, and from its warm-up and MobileNetV2
family training where the settings each depends on match (`REUSE_KEYS`): a longer warm-up or search still
reuses the table and the family.
Writes benchmarks/results/nas_lightnas_real{,-quick}.{json,md} and docs/images/nas-lightnas-real{,-quick}.png.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from devicefit import data as D
from devicefit.core import ArchSpec, ConfigError, atomic_write_json, atomic_write_text, machine_info, read_json
from devicefit.nn import export_onnx
from devicefit.search import LightNAS, LightNASConfig
from devicefit.search._latency_table import LatencyTable, LatencyTableConfig
from devicefit.space import MBConvSupernet, get_space
from devicefit.train import TrainConfig, evaluate, fit

ROOT = Path(__file__).resolve().parent
RESULTS, IMAGES = ROOT / "results", ROOT.parent / "docs" / "images"
TOL = 0.05
FULL = {"n_archs": 120, "n_train": 0, "warmup_epochs": 2, "search_epochs": 2, "train_epochs": 6,
        "mbv2_widths": [0.5, 0.75, 1.0], "rounds": 7, "n_drift": 8, "passes": 3, "repeats": 50}
QUICK = {"n_archs": 24, "n_train": 600, "warmup_epochs": 1, "search_epochs": 1, "train_epochs": 1,
         "mbv2_widths": [0.5, 1.0], "rounds": 3, "n_drift": 3, "passes": 1, "repeats": 20}


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: " + ", ".join(f"{k}={v}" for k, v in QUICK.items()))
    ap.add_argument("--data-dir", default=None,
                    help="full CIFAR-10 copy (default: the bundled subset, whatever DEVICEFIT_DATA_DIR says)")
    ap.add_argument("--width", type=float, default=0.5, help="stage width multiplier of the search")
    ap.add_argument("--weight-sharing", choices=("ofa", "per_op"), default="ofa",
                    help="supernet weight layout (runs before 2026-11-22 evening used per_op)")
    ap.add_argument("--levels", type=float, nargs="+", default=[0.4, 0.55, 0.7],
                    help="targets as fractions of the way from the cheapest to the dearest network")
    ap.add_argument("--repair-tolerance", type=float, default=None,
                    help="LightNASConfig.tolerance (default: the config's default, 0.05)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for search and training")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--anchor", action="store_true", help="measured anchoring: LightNAS measures on the machine")
    ap.add_argument("--measure-every", type=int, default=0, help="with --anchor: architecture steps between "
                    "measurements during the search (0: only the closing loop; the measured run used 20)")
    ap.add_argument("--max-measurements", type=int, default=4, help="with --anchor: closing-loop measurements")
    ap.add_argument("--name", help="results file stem (default nas_lightnas_real[-anchored][-quick])")
    ap.add_argument("--train-seeds", type=int, default=1, help="retrain every model with this many seeds (seed, "
                    "seed+1, ...; accuracies averaged); more seeds extend a finished run")
    ap.add_argument("--skip-train", action="store_true", help="do not retrain the searched networks (landing "
                    "only: accuracy columns stay empty)")
    ap.add_argument("--reuse-from", type=Path, help="work dir of a finished run to take the table, warm-up and "
                    "family training from")
    ap.add_argument("--work-dir", type=Path, help="state and checkpoints (default benchmarks/runs/<name>)")
    for k, v in FULL.items():
        ap.add_argument("--" + k.replace("_", "-"), type=type(v) if not isinstance(v, list) else float,
                        nargs="+" if isinstance(v, list) else None, default=None, help=f"full default {v}")
    args = ap.parse_args()
    preset = QUICK if args.quick else FULL
    for k, v in preset.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.name = args.name or ("nas_lightnas_real" + ("-anchored" if args.anchor else "") +
                              ("-quick" if args.quick else ""))
    args.work_dir = args.work_dir or ROOT / "runs" / args.name
    return args


class State:
    """The JSON state file of a run: settings (a rerun must match them) and one entry per finished step."""

    def __init__(self, work: Path, settings: dict[str, Any]) -> None:
        self.path = work / "state.json"
        work.mkdir(parents=True, exist_ok=True)
        self.doc = read_json(self.path) if self.path.exists() else {"settings": settings}
        old, missing = self.doc["settings"], object()
        if old.get("mbv2_widths") != settings.get("mbv2_widths") and \
                set(settings.get("mbv2_widths", ())) <= set(old.get("mbv2_widths", ())):
            self.doc["settings"] = old = {**old, "mbv2_widths": settings["mbv2_widths"]}  # fewer family members
        if old != settings:
            diff = sorted(k for k in set(old) | set(settings) if old.get(k, missing) != settings.get(k, missing))
            raise ConfigError(f"{self.path} holds a run with other settings ({', '.join(diff)}); pass another "
                              "--work-dir or delete it")

    def get(self, key: str) -> Any:
        return self.doc.get(key)

    def put(self, key: str, value: Any) -> None:
        self.doc[key] = value
        atomic_write_json(self.path, self.doc)


ANCHOR_KEYS = ("anchor", "measure_every", "max_measurements")


def settings_of(args: Any) -> dict[str, Any]:
    keys = ("data_dir", "width", "levels", "batch_size", "repair_tolerance", "threads", "seed", "weight_sharing",
            *FULL)
    return {k: getattr(args, k) for k in keys + (ANCHOR_KEYS if args.anchor else ())}


# what each reusable step depends on: a step of `--reuse-from` is taken when these settings match
REUSE_KEYS = {
    "table": ("width", "n_archs", "passes", "repeats", "seed"),
    "warmup": ("width", "weight_sharing", "warmup_epochs", "batch_size", "seed", "n_train", "data_dir"),
    "family": ("train_epochs", "batch_size", "seed", "n_train", "data_dir"),  # threads: speed, not the recipe
}


def reuse(args: Any, state: State) -> None:
    """Start from `--reuse-from`'s latency table, warm-up and MobileNetV2 family training, each taken when the
    settings it depends on (`REUSE_KEYS`) match; copied once, into a work dir that has none of them yet. A
    longer warm-up or search thus still reuses the table and the family's training."""
    src = args.reuse_from
    if not src or (args.work_dir / "latency_table.json").exists():
        return
    doc = read_json(src / "state.json")
    other, mine = doc["settings"], state.doc["settings"]
    match = {step: all(other.get(k) == mine.get(k) for k in keys) for step, keys in REUSE_KEYS.items()}
    if not match["table"]:
        diff = [k for k in REUSE_KEYS["table"] if other.get(k) != mine.get(k)]
        raise ConfigError(f"--reuse-from {src}: its latency table was fitted with other settings "
                          f"({', '.join(diff)}); reuse needs at least the same table")
    shutil.copy2(src / "latency_table.json", args.work_dir / "latency_table.json")
    state.put("table", doc["table"])
    taken = ["latency table"]
    if match["warmup"] and (src / "warmup.pt").exists():
        shutil.copy2(src / "warmup.pt", args.work_dir / "warmup.pt")
        state.put("warmup", doc["warmup"])
        taken.append("warm-up")
    family = {k: v for k, v in (doc.get("train") or {}).items() if k.startswith("mbv2-")} if match["family"] else {}
    for name in family:
        src_onnx = src / "onnx" / f"{name}.onnx"
        if src_onnx.exists():
            (args.work_dir / "onnx").mkdir(parents=True, exist_ok=True)
            shutil.copy2(src_onnx, args.work_dir / "onnx" / f"{name}.onnx")
    if family:
        state.put("train", family)
        taken.append(f"family {sorted(family)}")
    state.put("reused_from", {"run": _rel(src), "steps": taken})
    log(f"reused {src}: {', '.join(taken)}")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- step 1: latency table --------------------------------------------------------------------------------

def latency_table(args: Any, state: State) -> LatencyTable:
    path = args.work_dir / "latency_table.json"
    if path.exists():
        return LatencyTable.load(path, space="mbconv", widths=args.width, target="host-ort")
    cfg = LatencyTableConfig(space="mbconv", widths=args.width, target="host-ort", n_archs=args.n_archs,
                             threads=1, repeats=args.repeats, passes=args.passes, seed=args.seed)
    t0 = time.perf_counter()
    lt = LatencyTable(cfg).fit(log=log)
    lt.save(path)
    state.put("table", {"fit_s": time.perf_counter() - t0, "holdout": lt.holdout_, "train_error": lt.train_error_,
                        "constant_ms": lt.constant_ms_, "range_ms": list(lt.range_ms())})
    return lt


# -- step 2: search ---------------------------------------------------------------------------------------

def datasets(args: Any) -> tuple[Any, Any, Any]:
    tr, val = D.split_train_val(D.load_dataset("cifar10", "train", args.data_dir), 0.1, seed=args.seed)
    test = D.load_dataset("cifar10", "test", args.data_dir)
    if args.n_train:  # random subsets (the splits are stored class by class)
        rng = np.random.default_rng(args.seed)
        tr = tr.subset(np.sort(rng.permutation(len(tr))[: args.n_train]))
        val = val.subset(np.sort(rng.permutation(len(val))[: max(args.n_train // 5, 64)]))
        test = test.subset(np.sort(rng.permutation(len(test))[: max(args.n_train // 2, 200)]))
    return tr, val, test


def batches(ds: Any, batch_size: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.as_tensor(x), torch.as_tensor(y))
            for x, y in D.BatchLoader(ds, batch_size, shuffle=True, augment="none", seed=seed)]


def warmed_up(args: Any, state: State, net: MBConvSupernet, train_b: list[Any]) -> dict[str, torch.Tensor]:
    """Weight-only warm-up on uniform paths at the search widths, shared by every target (cached; checkpointed
    after every epoch in `warmup.partial.pt`, so a killed warm-up resumes at its last finished epoch)."""
    path, partial = args.work_dir / "warmup.pt", args.work_dir / "warmup.partial.pt"
    if path.exists() and state.get("warmup"):
        return torch.load(path, weights_only=True)  # type: ignore[no-any-return]
    active = net.active_
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    rng, start, wall = np.random.default_rng(args.seed), 0, 0.0
    if partial.exists():
        ck = torch.load(partial, weights_only=False)
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        rng.bit_generator.state, start, wall = ck["rng"], ck["epoch"], ck["wall_s"]
        log(f"warm-up: resuming after epoch {start}")
    log(f"warm-up: {args.warmup_epochs} epochs, {len(train_b)} batches each")
    for epoch in range(start, args.warmup_epochs):
        t0 = time.perf_counter()
        for x, y in train_b:
            net.set_active(net.space.sample(rng).replace(widths=active["widths"])).train()
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        wall += time.perf_counter() - t0
        _save(partial, {"model": net.state_dict(), "optimizer": opt.state_dict(), "rng": rng.bit_generator.state,
                        "epoch": epoch + 1, "wall_s": wall})
        log(f"  warm-up epoch {epoch + 1}/{args.warmup_epochs}: last loss {loss.item():.3f}, "
            f"{time.perf_counter() - t0:.0f} s")
    net.set_active(active)
    sd = copy.deepcopy(net.state_dict())
    _save(path, sd)
    state.put("warmup", {"epochs": args.warmup_epochs, "wall_s": wall})
    partial.unlink(missing_ok=True)
    return sd


def _save(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def search(args: Any, state: State, lt: LatencyTable) -> list[dict[str, Any]]:
    lo, hi = lt.range_ms()
    targets = [(lev, lo + lev * (hi - lo)) for lev in args.levels]
    done = state.get("search") or {}
    if all(f"{lev:g}" in done for lev, _ in targets):
        return [done[f"{lev:g}"] for lev, _ in targets]
    space, widths = get_space("mbconv"), tuple(args.width for _ in range(6))
    tr, val, _ = datasets(args)
    train_b, val_b = batches(tr, args.batch_size, args.seed), batches(val, args.batch_size, args.seed + 1)
    torch.manual_seed(args.seed)
    net = MBConvSupernet(space, num_classes=10, weight_sharing=args.weight_sharing)
    net.set_active(space.smallest().replace(widths=widths))
    sd = warmed_up(args, state, net, train_b)
    for lev, target in targets:
        if f"{lev:g}" in done:
            continue
        net.load_state_dict(sd)
        net.set_active(space.smallest().replace(widths=widths))
        log(f"search: level {lev:g}, T = {target:.4f} ms, {args.search_epochs} epochs")
        t0 = time.perf_counter()
        extra: dict[str, Any] = {} if args.repair_tolerance is None else {"tolerance": args.repair_tolerance}
        if args.anchor:
            extra.update(measure_every=args.measure_every, max_measurements=args.max_measurements)
        cfg = LightNASConfig(target=target, epochs=args.search_epochs, warmup_epochs=0, seed=args.seed, **extra)
        nas = LightNAS(net, lt.cost(), cfg, measure=lt.time_spec if args.anchor else None)
        nas.fit(train_b, val_b)
        done[f"{lev:g}"] = {"level": lev, "target_ms": target, "spec": nas.spec_.to_dict(),
                            "predicted_ms": nas.cost_, "search_predicted_ms": nas.search_cost_,
                            "repairs": len(nas.repairs_), "final_lambda": nas.lambda_,
                            "search_s": time.perf_counter() - t0, "arch_steps": len(nas.history_),
                            "cost_ratio_trace": [round(h["cost_argmax"] / target, 4) for h in nas.history_],
                            "scale": nas.scale_,
                            "measurements": [{k: m[k] for k in ("step", "phase", "predicted", "measured",
                                                                "scale_after")} for m in nas.measurements_]}
        mine = [m for m in nas.measurements_ if m["spec"] == nas.spec_.to_dict()]
        done[f"{lev:g}"]["anchor_measured_ms"] = mine[-1]["measured"] if mine else None
        log(f"  predicted/T {nas.cost_ / target:.3f} (search argmax {nas.search_cost_ / target:.3f}, "
            f"{len(nas.repairs_)} repairs, {len(nas.measurements_)} measurements, scale {nas.scale_:.3f}) in "
            f"{time.perf_counter() - t0:.0f} s")
        state.put("search", done)
    return [done[f"{lev:g}"] for lev, _ in targets]


# -- step 3: training ----------------------------------------------------------------------------------------

def models(args: Any, searched: list[dict[str, Any]]) -> dict[str, ArchSpec]:
    out = {f"lightnas-{s['level']:g}": ArchSpec.from_dict(s["spec"]) for s in searched}
    n = get_space("mbconv").n_layers
    for w in args.mbv2_widths:
        out[f"mbv2-{w:g}"] = ArchSpec("mbconv", {"ops": ("k3_e6",) * n, "widths": (w,) * 6})
    return out


def recipe(args: Any, seed: int | None = None) -> TrainConfig:
    return TrainConfig(epochs=args.train_epochs, batch_size=args.batch_size, lr=0.05,
                       warmup_epochs=min(1.0, 0.5 * args.train_epochs), threads=args.threads,
                       seed=args.seed if seed is None else seed)


def run_key(name: str, r: int, seed: int) -> str:
    """State key of a model's r-th training run: the bare name for the first seed (older runs' layout)."""
    return name if r == 0 else f"{name}#seed{seed}"


def seed_accuracies(trained: dict[str, Any], name: str, seeds: list[int]) -> list[float]:
    """Test accuracies of model `name`'s finished training runs with `seeds`, in that order."""
    keys = [run_key(name, r, seed) for r, seed in enumerate(seeds)]
    return [trained[k]["test_accuracy"] for k in keys if k in trained]


def train_all(args: Any, state: State, specs: dict[str, ArchSpec]) -> dict[str, Any]:
    """Train every model from scratch with `--train-seeds` seeds (seed-major order, so that a cut run has every
    model at the first seed); the first seed's network is exported (the others have the same graph)."""
    done = state.get("train") or {}
    tr, _, test = datasets(args)
    space = get_space("mbconv")
    for r in range(args.train_seeds):
        seed = args.seed + r
        for name, spec in specs.items():
            key = run_key(name, r, seed)
            if key in done:
                continue
            log(f"train {key}: {args.train_epochs} epochs on {len(tr)} images, seed {seed}")
            torch.manual_seed(seed)
            net = space.build(spec, num_classes=10)
            t0 = time.perf_counter()
            res = fit(net, tr, recipe(args, seed), run_dir=args.work_dir / "train" / key.replace("#", "-"),
                      progress=False, augment_default=D.DATASETS.get("cifar10").augment)
            acc = evaluate(net, test)["accuracy"]
            if r == 0:
                onnx = args.work_dir / "onnx" / f"{name}.onnx"
                onnx.parent.mkdir(parents=True, exist_ok=True)
                export_onnx(net.eval(), (3, 32, 32), onnx)
            done[key] = {"spec": spec.to_dict(), "seed": seed, "threads": args.threads,  # both decide the weights
                         "test_accuracy": acc, "test_images": len(test),
                         "params": sum(p.numel() for p in net.parameters()), "train_s": time.perf_counter() - t0,
                         "final_train": res.final, "images_per_s": [e.images_per_s for e in res.history]}
            log(f"  test accuracy {acc:.3f} in {time.perf_counter() - t0:.0f} s")
            state.put("train", done)
    return done


# -- step 4: final measurement ---------------------------------------------------------------------------------

def final_round(args: Any, state: State, lt: LatencyTable, specs: dict[str, ArchSpec]) -> dict[str, Any]:
    """Time every model (before training: latency does not depend on weight values, so the untrained export is
    the trained model's graph) and `--n-drift` calibration networks in interleaved rounds."""
    if state.get("final"):
        return state.get("final")  # type: ignore[no-any-return]
    order = np.argsort(lt.measured_ms_)
    pick = [int(order[round(q)]) for q in np.linspace(0, len(order) - 1, args.n_drift)]
    paths = {n: args.work_dir / "onnx" / f"{n}.onnx" for n in specs}
    for n, spec in specs.items():
        if not paths[n].exists():
            paths[n].parent.mkdir(parents=True, exist_ok=True)
            export_onnx(get_space("mbconv").build(spec, num_classes=10).eval(), (3, 32, 32), paths[n])
    for i in pick:
        p = args.work_dir / "onnx" / f"calib-{i}.onnx"
        if not p.exists():
            lt.export(lt.specs_[i], p)
        paths[f"calib-{i}"] = p
    rng, t0 = np.random.default_rng(args.seed + 3), time.perf_counter()
    keys, times = list(paths), {k: [] for k in paths}
    log(f"final measurement: {len(keys)} networks × {args.rounds} interleaved rounds")
    for _ in range(args.rounds):
        for j in rng.permutation(len(keys)):
            times[keys[j]].append(lt.time_onnx(paths[keys[j]]))
    out = {k: {"median_ms": float(np.median(v)), "min_ms": float(np.min(v)), "max_ms": float(np.max(v)),
               "rounds_ms": v} for k, v in times.items()}
    ratios = [out[f"calib-{i}"]["median_ms"] / float(lt.measured_ms_[i]) for i in pick]
    final = {"models": out, "drift": float(np.median(ratios)), "drift_ratios": ratios,
             "drift_networks": [{"index": i, "at_fit_ms": float(lt.measured_ms_[i]),
                                 "predicted_ms": lt.predict(lt.specs_[i])} for i in pick],
             "wall_s": time.perf_counter() - t0}
    state.put("final", final)
    return final


# -- results ---------------------------------------------------------------------------------------------------

def summarize(args: Any, state: State, lt: LatencyTable, searched: list[dict[str, Any]], trained: dict[str, Any],
              final: dict[str, Any], wall_s: float) -> dict[str, Any]:
    drift, meas = final["drift"], final["models"]
    seeds = [args.seed + r for r in range(args.train_seeds)]
    accs = {k: seed_accuracies(trained, k, seeds) for k in meas if not k.startswith("calib-")}
    mean = {k: float(np.mean(v)) if v else None for k, v in accs.items()}
    family = sorted((meas[k]["median_ms"], mean[k], k) for k in trained if k.startswith("mbv2") and "#" not in k)
    rows = []
    for s in searched:
        name = f"lightnas-{s['level']:g}"
        ms, acc, T = meas[name]["median_ms"], mean.get(name), s["target_ms"]
        inside = family[0][0] <= ms <= family[-1][0] if family else False
        interp = float(np.interp(ms, [f[0] for f in family], [f[1] for f in family])) if inside else None
        raw, corr = ms / T, ms / (drift * T)
        rows.append({"name": name, "level": s["level"], "target_ms": T, "predicted_ms": s["predicted_ms"],
                     "predicted_over_T": s["predicted_ms"] / T,
                     "search_predicted_over_T": s["search_predicted_ms"] / T, "measured_ms": ms,
                     "measured_min_ms": meas[name]["min_ms"], "measured_max_ms": meas[name]["max_ms"],
                     "measured_over_T_raw": raw, "measured_over_T_drift_corrected": corr,
                     "within_tol_raw": abs(raw - 1) <= TOL, "within_tol_drift_corrected": abs(corr - 1) <= TOL,
                     "repairs": s["repairs"], "search_s": s["search_s"], "arch_steps": s["arch_steps"],
                     "measurements": len(s.get("measurements", [])), "scale": s.get("scale", 1.0),
                     "anchor_measured_over_T": None if s.get("anchor_measured_ms") is None
                     else s["anchor_measured_ms"] / T,
                     "test_accuracy": acc, "test_accuracy_seeds": accs.get(name, []),
                     "mbv2_accuracy_at_same_ms": interp,
                     "accuracy_gain_over_mbv2": None if interp is None or acc is None else acc - interp,
                     "ops": s["spec"]["params"]["ops"]})
    mbv2 = [{"name": k, "width": float(k.split("-")[1]), "measured_ms": ms, "test_accuracy": acc,
             "test_accuracy_seeds": accs[k],
             "measured_min_ms": meas[k]["min_ms"], "measured_max_ms": meas[k]["max_ms"]} for ms, acc, k in family]
    warm = state.get("warmup") or {}
    search_s = warm.get("wall_s", 0.0) + sum(s["search_s"] for s in searched)
    settings = {k: (_rel(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("data_dir",)}
    settings["work_dir"] = _rel(args.work_dir)
    return {"benchmark": args.name, "settings": settings, "tolerance": TOL, "table": state.get("table") or {
                "holdout": lt.holdout_, "train_error": lt.train_error_, "constant_ms": lt.constant_ms_,
                "range_ms": list(lt.range_ms())},
            "table_config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(lt.config).items()},
            "recipe": recipe(args).fingerprint(), "train_images": len(datasets(args)[0]),
            "test_images": next(iter(trained.values()))["test_images"], "drift": drift,
            "drift_ratios": final["drift_ratios"], "searched": rows, "mbv2": mbv2,
            "search_wall_s": search_s, "warmup_s": warm.get("wall_s"), "wall_s_this_call": wall_s,
            "steps_wall_s": (state.get("table") or {}).get("fit_s", 0.0) + search_s
            + sum(v["train_s"] for v in trained.values()) + final.get("wall_s", 0.0),
            "train_s": {k: v["train_s"] for k, v in trained.items()},
            "train_threads": {k: v.get("threads") for k, v in trained.items()},  # None: trained before it was kept
            "machine": machine_info()}


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT.parent))
    except ValueError:
        return path.name


def _f(v: Any, fmt: str) -> str:
    return "–" if v is None else format(v, fmt)


def _pct(v: float | None, fmt: str = ".1f") -> str:
    return "–" if v is None else format(100 * v, fmt)


def markdown(doc: dict[str, Any]) -> str:
    s, t = doc["settings"], doc["table"]
    h, nan = t["holdout"], float("nan")
    lines = [
        f"# LightNAS on CIFAR-10 with host-ort latency targets ({doc['benchmark']})", "",
        f"Space `mbconv` at stage width {s['width']}, 32×32, fp32, batch 1, 1 ORT thread. Latency table fitted to "
        f"end-to-end timings of {s['n_archs']} + 2 networks ({s['passes']} interleaved passes, median); held-out "
        f"error (fit on {h.get('n_fit', '–')}, tested on {h.get('n', 0)}): mean "
        f"{_pct(h.get('mean_rel_error', nan))} %, median {_pct(h.get('median_rel_error', nan))} %, "
        f"max {_pct(h.get('max_rel_error', nan))} %. "
        f"Table range {t['range_ms'][0]:.3f}–{t['range_ms'][1]:.3f} ms.", "",
        f"Search: shared weight-only warm-up {s['warmup_epochs']} epochs, then one LightNAS run per target "
        f"(default controller, {s['search_epochs']} epochs, batch {s['batch_size']}, {doc['train_images']} training "
        f"images); search wall time {doc['search_wall_s']:.0f} s in all (warm-up {_f(doc['warmup_s'], '.0f')} s) "
        f"on {s['threads']} thread(s). Retraining: every model from scratch, same recipe ({s['train_epochs']} "
        "epochs SGD lr 0.05 cosine, crop+flip, label smoothing 0.1), test accuracy on "
        f"{doc['test_images']} test images, mean over {s.get('train_seeds', 1)} seed(s). Wall time of all steps "
        f"{doc['steps_wall_s'] / 60:.1f} min.", "",
        f"Final measurement: trained models + {s['n_drift']} calibration networks in {s['rounds']} interleaved "
        f"rounds (median). **Drift** (re-timed / timed at fit, median over the calibration networks) = "
        f"{doc['drift']:.3f} (per network: {', '.join(f'{r:.2f}' for r in doc['drift_ratios'])}). "
        "*measured/T raw* divides the measured median by T; *drift-corrected* divides it by drift·T (T "
        "re-expressed at the final round's machine speed). Shared, noisy machine: see the machine block in the "
        "JSON.", "",
        *(["Measured anchoring (`--anchor`): each search measured its argmax architecture "
           + (f"every {s['measure_every']} architecture steps and " if s["measure_every"] else "")
           + f"in a closing loop after the search (at most {s['max_measurements']} "
           "measurements); *anchor* gives the search's own last measurement of its result / T and the number of "
           "measurements. Raw measured/T is the figure that counts here: the anchor already absorbs the drift up "
           "to the search.", ""] if s.get("anchor") else []),
        "| target | T (ms) | predicted/T | anchor (n) | measured ms (min–max over rounds) | measured/T raw | "
        "measured/T drift-corr. | within ±5 % raw / corr. | repairs | search s | test acc. | MBv2 acc. at same ms "
        "| Δacc |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in doc["searched"]:
        yes = "/".join("yes" if r[k] else "no" for k in ("within_tol_raw", "within_tol_drift_corrected"))
        lines.append(
            f"| {r['level']:.0%} | {r['target_ms']:.3f} | {r['predicted_over_T']:.3f} | "
            f"{_f(r.get('anchor_measured_over_T'), '.3f')} ({r.get('measurements', 0)}) | {r['measured_ms']:.3f} "
            f"({r['measured_min_ms']:.3f}–{r['measured_max_ms']:.3f}) | {r['measured_over_T_raw']:.3f} | "
            f"{r['measured_over_T_drift_corrected']:.3f} | {yes} | {r['repairs']} | {r['search_s']:.0f} | "
            f"{_pct(r['test_accuracy'])} % | {_pct(r['mbv2_accuracy_at_same_ms'])} | "
            f"{_pct(r['accuracy_gain_over_mbv2'], '+.1f')} |")
    lines += ["", "MobileNetV2 family (the `mbconv` layout, every layer k3_e6, width-scaled), same recipe:", "",
              "| width | measured ms (min–max) | test acc. (mean) | per seed |", "|---:|---:|---:|---|"]
    for m in doc["mbv2"]:
        lines.append(f"| {m['width']:g} | {m['measured_ms']:.3f} ({m['measured_min_ms']:.3f}–"
                     f"{m['measured_max_ms']:.3f}) | {_pct(m['test_accuracy'])} % | "
                     f"{', '.join(_pct(a) for a in m.get('test_accuracy_seeds', []))} |")
    lines += ["", "MBv2 acc. at same ms: the family's accuracy interpolated linearly in measured latency ('–' when "
              "the searched model lies outside the family's latency span). Searched ops per layer:", ""]
    lines += [f"- {r['name']}: {' '.join(r['ops'])} (test acc. per seed: "
              f"{', '.join(_pct(a) for a in r.get('test_accuracy_seeds', [])) or '–'})" for r in doc["searched"]]
    return "\n".join(lines) + "\n"


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    fam = doc["mbv2"]
    ax.plot([m["measured_ms"] for m in fam], [100 * m["test_accuracy"] for m in fam], "o-", color="tab:gray",
            label="MobileNetV2 family (k3_e6, width-scaled)")
    for m in fam:
        ax.errorbar(m["measured_ms"], 100 * m["test_accuracy"], xerr=[[m["measured_ms"] - m["measured_min_ms"]],
                    [m["measured_max_ms"] - m["measured_ms"]]], color="tab:gray", capsize=2)
        ax.annotate(f"×{m['width']:g}", (m["measured_ms"], 100 * m["test_accuracy"]), textcoords="offset points",
                    xytext=(4, -10), fontsize=8, color="tab:gray")
    for i, r in enumerate(doc["searched"]):
        c = f"C{i}"
        ax.axvline(r["target_ms"], color=c, ls=":", lw=1)
        if r["test_accuracy"] is None:  # --skip-train: no accuracy to place it by
            continue
        ax.errorbar(r["measured_ms"], 100 * r["test_accuracy"], xerr=[[r["measured_ms"] - r["measured_min_ms"]],
                    [r["measured_max_ms"] - r["measured_ms"]]], fmt="*", ms=12, color=c, capsize=2,
                    label=f"LightNAS T={r['target_ms']:.2f} ms (measured/T {r['measured_over_T_raw']:.2f})")
    s = doc["settings"]
    ax.set_xlabel("measured latency, ms (host-ort fp32, batch 1, 1 thread; median, min–max over rounds)")
    ax.set_ylabel(f"test accuracy, % ({doc['test_images']} CIFAR-10 test images)")
    ax.set_title(f"LightNAS vs MobileNetV2 on mbconv, {s['train_epochs']}-epoch recipe, {doc['train_images']} "
                 f"train images; dotted: targets (drift {doc['drift']:.2f})", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def write_result(name: str, doc: dict[str, Any], plot: Callable[[dict[str, Any], Path], None],
                 markdown: Callable[[dict[str, Any]], str]) -> str:
    """Write results/<name>.json, the plot as docs/images/<name, dashed>.png and results/<name>.md linking it (each
    atomically); return the Markdown."""
    out = RESULTS / name
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out.with_suffix(".json"), doc)
    image = IMAGES / (name.replace("_", "-") + ".png")
    plot(doc, image)
    text = markdown(doc) + f"\n![accuracy against measured latency](../../docs/images/{image.name})\n"
    atomic_write_text(out.with_suffix(".md"), text)
    return text


def main() -> None:
    args = parse()
    if args.data_dir is None:  # the bundled subset, as documented; load_dataset would else read the env
        os.environ.pop("DEVICEFIT_DATA_DIR", None)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    state = State(args.work_dir, settings_of(args))
    reuse(args, state)
    lt = latency_table(args, state)
    lo, hi = lt.range_ms()
    err = lt.holdout_.get("mean_rel_error", float("nan"))
    log(f"latency table: {lo:.3f}–{hi:.3f} ms, held-out mean error {100 * err:.1f} %")
    searched = search(args, state, lt)
    specs = models(args, searched)
    final = final_round(args, state, lt, specs)  # timed before training: the earlier, the less drift
    trained = train_all(args, state, {k: v for k, v in specs.items() if not (args.skip_train and
                                                                             k.startswith("lightnas-"))})
    doc = summarize(args, state, lt, searched, trained, final, time.perf_counter() - t0)
    print(write_result(args.name, doc, plot, markdown))


if __name__ == "__main__":
    main()
