"""Do LightNAS's searched networks really lie above the MobileNetV2 family? More training seeds, the full test set.

    python benchmarks/nas_lightnas_seeds.py --data-dir ../shared/data --shard 1/2 &   # one process per core
    python benchmarks/nas_lightnas_seeds.py --data-dir ../shared/data --shard 2/2 &
    wait; python benchmarks/nas_lightnas_seeds.py --data-dir ../shared/data          # the report

`nas_lightnas_real.py` retrains every searched network and the width-scaled MobileNetV2 family with one
recipe, usually with one seed, and tests them on the bundled 1,000 test images: about ±1.6 points on each
accuracy, as large as the gaps it reports. This script takes finished results of it (`--results`, JSON; the
architectures, the recipe and the side-by-side measured latencies are all in them, so no search and no timing
is repeated) and trains every network again from scratch with `--seeds`, on the same 4,500 bundled training
images with the same recipe, then tests each on the full 10,000-image CIFAR-10 test set (`--data-dir`) as
well as on the bundled 1,000. The results must share one recipe and one MobileNetV2 family (the family's
networks are trained once and compared with each result at that result's own measured latencies).

Per searched network it reports the accuracy per seed, the family interpolated at the network's measured
latency per seed, and Δ = searched − family: the mean over seeds and its standard error (the seeds pair the
two sides: same data order, same augmentation draws). Training is deterministic, so the original seed's
1,000-image accuracy must come out exactly as the result recorded it; the report checks that.

Each finished (network, seed) lands in `<work-dir>/jobs/` at once (atomic JSON): a killed run resumes, and
`--shard K/N` processes (jobs i with i mod N = K − 1, seed-major, so a cut run has whole seeds) share the
work dir. The report is written once every job has finished (`--partial`: train nothing, report what has).
Writes benchmarks/results/<name>.{json,md} and docs/images/<name>.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from devicefit import data as D
from devicefit.core import (
    ArchSpec,
    ConfigError,
    atomic_open,
    atomic_write_json,
    machine_info,
    read_json,
)
from devicefit.space import get_space
from devicefit.train import TrainConfig, evaluate, fit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import nas_lightnas_real as L  # noqa: E402  (the benchmark whose results are re-trained)

RESULTS = HERE / "results"
DEFAULT_RESULTS = ["nas_lightnas_real-w075-long", "nas_lightnas_real-w075"]


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", nargs="+", default=DEFAULT_RESULTS,
                    help="nas_lightnas_real result stems in benchmarks/results (or JSON paths)")
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="full CIFAR-10 copy for the 10,000-image test set (without it: the bundled 1,000 only)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--shard", default="1/1", metavar="K/N", help="this process's share of the jobs")
    ap.add_argument("--partial", action="store_true",
                    help="train nothing: write the report from the jobs finished so far")
    ap.add_argument("--name", default="nas_lightnas_seeds")
    ap.add_argument("--work-dir", type=Path, default=None, help="default benchmarks/runs/<name>")
    args = ap.parse_args()
    try:
        k, n = (int(x) for x in args.shard.split("/"))
    except ValueError:
        ap.error(f"--shard: expected K/N such as 1/2, got {args.shard!r}")
    if not 1 <= k <= n:
        ap.error(f"--shard: K must lie in 1..N, got {args.shard!r}")
    args.shard = (k, n)
    if args.threads < 1:
        ap.error(f"--threads: expected ≥ 1, got {args.threads}")
    args.work_dir = args.work_dir or HERE / "runs" / args.name
    return args


def load_results(names: list[str]) -> dict[str, dict[str, Any]]:
    """The results by stem; refuses results whose recipe, training data or family differ from the first's."""
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        path = Path(name) if name.endswith(".json") else RESULTS / f"{name}.json"
        if not path.is_file():
            raise ConfigError(f"--results: {path} does not exist (expected a nas_lightnas_real result JSON)")
        doc = read_json(path)
        for key in ("searched", "mbv2", "recipe", "settings"):
            if key not in doc:
                raise ConfigError(f"--results: {path} has no {key!r}; is it a nas_lightnas_real result?")
        out[path.stem] = doc
    first_name, first = next(iter(out.items()))
    for name, doc in out.items():
        for what, get in (("recipe", lambda d: d["recipe"]), ("training data", train_key),
                          ("MobileNetV2 widths", lambda d: d["settings"]["mbv2_widths"])):
            if get(doc) != get(first):
                raise ConfigError(f"--results: {name}'s {what} ({get(doc)}) differs from {first_name}'s "
                                  f"({get(first)}); re-train results of one recipe together")
    return out


def train_key(doc: dict[str, Any]) -> dict[str, Any]:
    s = doc["settings"]
    return {"seed": s["seed"], "n_train": s["n_train"], "train_images": doc["train_images"]}


def networks(results: dict[str, dict[str, Any]]) -> dict[str, ArchSpec]:
    """Every network to train, by key: `mbv2-<w>` for the family, `<result>/<name>` for searched ones."""
    first = next(iter(results.values()))
    n = len(first["searched"][0]["ops"])  # layers of the mbconv space, one op each
    out = {m["name"]: ArchSpec("mbconv", {"ops": ("k3_e6",) * n, "widths": (m["width"],) * 6})
           for m in first["mbv2"]}
    for stem, doc in results.items():
        width = doc["settings"]["width"]
        for s in doc["searched"]:
            out[f"{stem}/{s['name']}"] = ArchSpec("mbconv", {"ops": tuple(s["ops"]), "widths": (width,) * 6})
    return out


def recipe(doc: dict[str, Any], seed: int, threads: int) -> TrainConfig:
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in doc["recipe"].items() if k in fields and k not in ("seed", "threads")},
                       seed=seed, threads=threads)


def job_path(work: Path, key: str, seed: int) -> Path:
    return work / "jobs" / f"{key.replace('/', '__')}--seed{seed}.json"


def jobs(nets: dict[str, ArchSpec], seeds: list[int]) -> list[tuple[str, int]]:
    return [(key, seed) for seed in seeds for key in nets]


def train_one(args: Any, doc: dict[str, Any], key: str, spec: ArchSpec, seed: int, sets: dict[str, Any]) -> None:
    path = job_path(args.work_dir, key, seed)
    if path.is_file():
        return
    cfg = recipe(doc, seed, args.threads)
    L.log(f"train {key} seed {seed}: {cfg.epochs} epochs on {len(sets['train'])} images")
    torch.manual_seed(seed)
    net = get_space("mbconv").build(spec, num_classes=10)
    t0 = time.perf_counter()
    res = fit(net, sets["train"], cfg, run_dir=args.work_dir / "train" / path.stem, progress=False,
              augment_default=D.DATASETS.get("cifar10").augment)
    train_s = time.perf_counter() - t0
    row = {"key": key, "seed": seed, "spec": spec.to_dict(), "train_s": train_s, "final_train": res.final,
           "params": sum(p.numel() for p in net.parameters()), "recipe": cfg.fingerprint(),
           "threads": cfg.threads}  # not in the fingerprint, yet another count gives other weights
    for split, ds in sets["test"].items():
        row[f"test_accuracy_{split}"] = evaluate(net, ds)["accuracy"]
        row[f"test_images_{split}"] = len(ds)
    L.log(f"  {key} seed {seed}: " + ", ".join(f"{row[f'test_accuracy_{s}']:.4f} on {len(d)}"
                                                 for s, d in sets["test"].items()) + f" in {train_s:.0f} s")
    atomic_write_json(path, row)


def datasets(args: Any, doc: dict[str, Any]) -> dict[str, Any]:
    """The result's own training split (the bundled subset) and the test sets: bundled, and full when given."""
    saved = os.environ.pop("DEVICEFIT_DATA_DIR", None)  # the bundled subset, as the searches used
    try:
        s = doc["settings"]
        tr, _, test_small = L.datasets(argparse.Namespace(data_dir=None, seed=s["seed"], n_train=s["n_train"]))
    finally:
        if saved is not None:
            os.environ["DEVICEFIT_DATA_DIR"] = saved
    if len(tr) != doc["train_images"]:
        raise ConfigError(f"training split has {len(tr)} images, the result trained on {doc['train_images']}")
    tests = {"bundled": test_small}
    if args.data_dir is not None:
        full = D.load_dataset("cifar10", "test", args.data_dir)
        if len(full) <= len(test_small):
            raise ConfigError(f"--data-dir: {args.data_dir} holds {len(full)} CIFAR-10 test images, no more than "
                              f"the bundled {len(test_small)}; expected the full copy (10,000)")
        tests["full"] = full
    return {"train": tr, "test": tests}


def finished(args: Any, todo: list[tuple[str, int]]) -> dict[tuple[str, int], dict[str, Any]]:
    out = {}
    for key, seed in todo:
        p = job_path(args.work_dir, key, seed)
        if p.is_file():
            out[(key, seed)] = read_json(p)
    return out


def interp_family(ms: float, fam_ms: list[float], fam_acc: list[float]) -> float | None:
    """Family accuracy at `ms`, linear between measured members; None outside their range (no extrapolation)."""
    order = np.argsort(fam_ms)
    xs, ys = np.asarray(fam_ms)[order], np.asarray(fam_acc)[order]
    return float(np.interp(ms, xs, ys)) if xs[0] <= ms <= xs[-1] else None


def summarize(args: Any, results: dict[str, dict[str, Any]], done: dict[tuple[str, int], dict[str, Any]],
              seeds: list[int], wall_s: float) -> dict[str, Any]:
    split = "full" if all("test_accuracy_full" in r for r in done.values()) else "bundled"  # one split for all
    acc = {k: r[f"test_accuracy_{split}"] for k, r in done.items()}

    def seeds_of(key: str) -> list[int]:
        return [s for s in seeds if (key, s) in acc]

    rows = []
    for stem, doc in results.items():
        fam = doc["mbv2"]
        for s in doc["searched"]:
            key = f"{stem}/{s['name']}"
            ok = [sd for sd in seeds_of(key) if all((m["name"], sd) in acc for m in fam)]
            fam_at = [interp_family(s["measured_ms"], [m["measured_ms"] for m in fam],
                                    [acc[(m["name"], sd)] for m in fam]) for sd in ok]
            deltas = [acc[(key, sd)] - f for sd, f in zip(ok, fam_at, strict=True) if f is not None]
            orig_seed = doc["settings"]["seed"]
            rows.append({
                "result": stem, "name": s["name"], "level": s["level"], "ops": s["ops"],
                "measured_ms": s["measured_ms"], "target_ms": s.get("target_ms"), "seeds": ok,
                "test_accuracy_seeds": [acc[(key, sd)] for sd in ok],
                "test_accuracy": float(np.mean([acc[(key, sd)] for sd in ok])) if ok else None,
                "family_at_same_ms_seeds": fam_at, "delta_seeds": deltas,
                "delta_mean": float(np.mean(deltas)) if deltas else None,
                "delta_se": float(np.std(deltas, ddof=1) / np.sqrt(len(deltas))) if len(deltas) > 1 else None,
                "original_seed": orig_seed, "original_test_accuracy_bundled": s["test_accuracy_seeds"][0]
                if s.get("test_accuracy_seeds") else s.get("test_accuracy"),
                "original_delta_bundled": s.get("accuracy_gain_over_mbv2"),
                "reproduced_bundled": done[(key, orig_seed)]["test_accuracy_bundled"]
                if (key, orig_seed) in done else None, "original_threads": trained_threads(results, stem, s["name"])})
    family = []
    first = next(iter(results.values()))
    for m in first["mbv2"]:
        ss = seeds_of(m["name"])
        family.append({"name": m["name"], "width": m["width"], "seeds": ss,
                       "test_accuracy_seeds": [acc[(m["name"], sd)] for sd in ss],
                       "test_accuracy": float(np.mean([acc[(m["name"], sd)] for sd in ss])) if ss else None,
                       "measured_ms": {stem: next(x["measured_ms"] for x in d["mbv2"] if x["name"] == m["name"])
                                       for stem, d in results.items()},
                       "original_test_accuracy_bundled": m["test_accuracy_seeds"][0],
                       "reproduced_bundled": done[(m["name"], first["settings"]["seed"])]["test_accuracy_bundled"]
                       if (m["name"], first["settings"]["seed"]) in done else None,
                       "original_threads": trained_threads(results, next(iter(results)), m["name"])})
    checks = [(r["original_test_accuracy_bundled"], r["reproduced_bundled"]) for r in rows + family
              if r["reproduced_bundled"] is not None]
    any_row = next(iter(done.values()))
    return {"benchmark": args.name, "results": list(results), "split": split,
            "supernets": {stem: supernet_label(d) for stem, d in results.items()},
            "test_images": any_row[f"test_images_{split}"], "train_images": first["train_images"],
            "seeds": seeds, "recipe": first["recipe"], "threads": args.threads, "searched": rows, "family": family,
            "reproduced": {"checked": len(checks), "exact": sum(abs(a - b) < 1e-9 for a, b in checks)},
            "train_s": {f"{k}#seed{s}": r["train_s"] for (k, s), r in done.items()},
            "jobs_done": len(done), "wall_s_this_call": wall_s, "machine": machine_info()}


def trained_threads(results: dict[str, dict[str, Any]], stem: str, name: str) -> int | None:
    """The thread count network `name` of result `stem` was originally trained with: its `train_threads` entry,
    else the run's `threads` setting (the run's state file refuses a rerun with another count). A family member
    taken over with `--reuse-from` from another of `results` (its recorded training time is that run's, to the
    bit) has that run's count."""
    doc = results[stem]
    kept = (doc.get("train_threads") or {}).get(name)
    if kept is not None:
        return int(kept)
    src = Path(doc["settings"].get("reuse_from") or "").name
    if name.startswith("mbv2-") and src in results and src != stem and \
            doc["train_s"].get(name) == results[src]["train_s"].get(name):
        return trained_threads(results, src, name)
    own = doc["settings"].get("threads")
    return None if own is None else int(own)


def supernet_label(doc: dict[str, Any]) -> str:
    s = doc["settings"]
    return f"{s['warmup_epochs']} warm-up + {s['search_epochs']} search epochs, width {s['width']:g}"


def _pct(v: float | None, sign: bool = False) -> str:
    return "—" if v is None else f"{100 * v:+.1f}".replace("-", "−") if sign else f"{100 * v:.1f}%"


def markdown(doc: dict[str, Any]) -> str:
    n = doc["test_images"]
    lines = [f"# {doc['benchmark']}", "",
             f"LightNAS's searched networks and the MobileNetV2 family re-trained from scratch with seeds "
             f"{', '.join(map(str, doc['seeds']))} (those that finished: each row lists its seeds' figures; "
             f"{doc['recipe']['epochs']} epochs, {doc['train_images']} "
             f"bundled training images, the results' own recipe, {doc['threads']} thread per process), tested on "
             f"{n:,} CIFAR-10 test images. Latencies are the results' own side-by-side measurements (host-ort fp32, "
             "batch 1, 1 thread); the family is interpolated at each searched network's measured latency, seed by "
             "seed. Δ: mean over seeds ± standard error.", "",
             "| result | target | measured ms | searched: test acc. (per seed) | family at that ms | Δ ± s.e. | "
             "Δ as first reported (1 seed, 1,000 images) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in doc["searched"]:
        per = ", ".join(f"{100 * a:.1f}" for a in r["test_accuracy_seeds"])
        fam = [f for f in r["family_at_same_ms_seeds"] if f is not None]
        se = "" if r["delta_se"] is None else f" ± {100 * r['delta_se']:.1f}"
        supernet = doc["supernets"][r["result"]]
        lines.append(f"| {r['result']} ({supernet}) | {r['level']:.0%} | {r['measured_ms']:.3f} | "
                     f"{_pct(r['test_accuracy'])} ({per}) | {_pct(float(np.mean(fam)) if fam else None)} | "
                     f"{_pct(r['delta_mean'], sign=True)}{se} | {_pct(r['original_delta_bundled'], sign=True)} |")
    lines += ["", "| family | test acc. (per seed) |", "|---|---:|"]
    for m in doc["family"]:
        per = ", ".join(f"{100 * a:.1f}" for a in m["test_accuracy_seeds"])
        lines.append(f"| MobileNetV2 ×{m['width']:g} | {_pct(m['test_accuracy'])} ({per}) |")
    rep = doc["reproduced"]
    lines += ["", f"Determinism check: {rep['exact']} of {rep['checked']} networks re-trained with the original seed "
              "reproduced the originally recorded 1,000-image test accuracy exactly. Training repeats bit for bit "
              f"only at one thread count: these re-trainings used {doc['threads']} per process, the originals the "
              "count in the last column (a run's state file pins it; a family taken over with `--reuse-from` has "
              "its source's):", "",
              "| network | original | re-trained | original threads |", "|---|---:|---:|---:|"]
    for r in doc["family"] + doc["searched"]:
        if r["reproduced_bundled"] is not None:
            name = f"MobileNetV2 ×{r['width']:g}" if "width" in r else f"{r['result']}/{r['name']}"
            lines.append(f"| {name} | {_pct(r['original_test_accuracy_bundled'])} | {_pct(r['reproduced_bundled'])} "
                         f"| {r.get('original_threads') or '?'} |")
    lines += ["",
              f"Jobs finished: {doc['jobs_done']}; training time {sum(doc['train_s'].values()) / 60:.0f} min "
              "of process time in all."]
    return "\n".join(lines) + "\n"


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stems = doc["results"]
    fig, axes = plt.subplots(1, len(stems), figsize=(6 * len(stems), 4.2), squeeze=False)
    for ax, stem in zip(axes[0], stems, strict=True):
        fam = sorted(doc["family"], key=lambda m: m["measured_ms"][stem])
        xs = [m["measured_ms"][stem] for m in fam]
        ax.errorbar(xs, [100 * m["test_accuracy"] for m in fam],
                    yerr=[100 * np.std(m["test_accuracy_seeds"]) for m in fam], fmt="o-", color="tab:gray",
                    capsize=3, label="MobileNetV2 family (mean ± sd over seeds)")
        for i, r in enumerate(x for x in doc["searched"] if x["result"] == stem):
            if r["test_accuracy"] is None:
                continue
            ax.errorbar(r["measured_ms"], 100 * r["test_accuracy"], yerr=100 * np.std(r["test_accuracy_seeds"]),
                        fmt="*", ms=12, color=f"C{i}", capsize=3,
                        label=f"LightNAS {r['level']:.0%} target (Δ {_pct(r['delta_mean'], sign=True)})")
        ax.set_title(f"{stem}: {doc['supernets'][stem]}", fontsize=9)
        ax.set_xlabel("measured latency, ms (host-ort fp32, batch 1, 1 thread)")
        ax.set_ylabel(f"test accuracy, % ({doc['test_images']:,} images)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    results = load_results(args.results)
    first = next(iter(results.values()))
    nets = networks(results)
    todo = jobs(nets, args.seeds)
    k, n = args.shard
    mine = [j for i, j in enumerate(todo) if i % n == k - 1]
    if not args.partial and any(not job_path(args.work_dir, key, seed).is_file() for key, seed in mine):
        sets = datasets(args, first)
        for key, seed in mine:
            train_one(args, first, key, nets[key], seed, sets)
    done = finished(args, todo)
    if len(done) < len(todo) and not args.partial:
        L.log(f"{len(done)} of {len(todo)} jobs finished; the report waits for the rest (or pass --partial)")
        return
    if not done:
        raise ConfigError("no finished job to report on")
    doc = summarize(args, results, done, args.seeds, time.perf_counter() - t0)
    print(L.write_result(args.name, doc, plot, markdown))


if __name__ == "__main__":
    main()
