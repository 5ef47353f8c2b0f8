"""Does the supernet proxy rank trained networks right? Uniform single-path training against the sandwich rule.

HSCoNAS and the other supernet searches trust one number per candidate: the *proxy*, the validation accuracy of
its path in the trained supernet after BatchNorm re-estimation. This benchmark trains one `mbconv` supernet per
path sampling (`train.PATH_SAMPLINGS`: "uniform", one uniform path per step; "sandwich", the largest, the
smallest and `--n-random` uniform paths per step with in-place distillation from the largest, as in BigNAS), then
scores a fixed set of architectures whose *trained* accuracy is known, and reports how well each proxy ranks
them: Kendall's tau and Spearman's rho against trained accuracy, and the trained accuracy lost by taking the
proxy's favourite (top-1 regret).

The evaluation set, all trained from scratch with the same recipe as `benchmarks/nas_hsconas.py`'s retraining
(bundled CIFAR-10 subset split 4,500 / 500, batch 64, lr 0.05, cosine, `--train-epochs`, 1 thread), test
accuracy on the 1,000 held-out test images:
- the networks `--trained-from` a `nas_hsconas.py` result retrained (its picks and the MobileNetV2 family
  members beside the budget; their recorded accuracy, averaged over that run's seeds, is reused, not retrained);
- `--random-archs` uniform random architectures of the space (seed 0);
- the MobileNetV2 family widths `--family-widths` that the result above did not train (seed 0).

The supernet recipe is `nas_hsconas.py`'s (`--supernet-epochs`, batch 64, lr 0.05), so the uniform supernet is
the one that search used. Phases can run in separate processes, one per core, sharing the work dir:

    python benchmarks/supernet_ranking.py --only supernet:uniform &
    python benchmarks/supernet_ranking.py --only supernet:sandwich &
    python benchmarks/supernet_ranking.py --only train &
    python benchmarks/supernet_ranking.py --only train --reverse &   # a second trainer, once a core is free
    wait; python benchmarks/supernet_ranking.py          # scores, tables; reuses everything finished

Everything lands in the work dir (benchmarks/runs/supernet_ranking/: supernet checkpoints, trained networks,
proxy scores), so a killed run resumes. Writes benchmarks/results/supernet_ranking.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nas_hsconas as H

from devicefit import data as D
from devicefit import train as T
from devicefit.core import ArchSpec, atomic_write_json, atomic_write_text, machine_info, read_json
from devicefit.space import get_space

ROOT = H.ROOT
SPACE = "mbconv"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samplings", nargs="+", default=["uniform", "sandwich"], choices=T.PATH_SAMPLINGS.names())
    ap.add_argument("--n-random", type=int, default=1, help="uniform paths per sandwich step")
    ap.add_argument("--supernet-epochs", type=int, default=12)
    ap.add_argument("--train-epochs", type=int, default=6, help="epochs of every trained network")
    ap.add_argument("--trained-from", type=Path, default=ROOT / "results" / "nas_hsconas-mbconv-zen5.json",
                    help="a nas_hsconas.py result whose retrained networks join the set ('' = none)")
    ap.add_argument("--random-archs", type=int, default=8, help="random architectures trained here")
    ap.add_argument("--family-widths", type=float, nargs="*", default=[0.5, 1.25],
                    help="MobileNetV2 family widths trained here (skipped if --trained-from has them)")
    ap.add_argument("--bn-batches", type=int, default=2, help="batches of 64 for BN re-estimation of a path")
    ap.add_argument("--only", default=None, help="one phase: supernet:NAME, train, or report")
    ap.add_argument("--reverse", action="store_true",
                    help="train the missing networks last first (a second --only train process on the same work dir)")
    ap.add_argument("--work-dir", type=Path, default=ROOT / "runs" / "supernet_ranking")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "supernet_ranking")
    ap.add_argument("--data-dir", default=None, help="full CIFAR-10 copy (default: the bundled subset)")
    args = ap.parse_args()
    args.space, args.batch_size, args.n_train, args.n_val = SPACE, 64, 0, 0  # what nas_hsconas's helpers read
    if args.random_archs < 0:
        ap.error(f"--random-archs must be >= 0, got {args.random_archs}")
    if args.only and not (args.only in ("train", "report") or args.only.removeprefix("supernet:") in args.samplings):
        ap.error(f"--only must be supernet:NAME (NAME in {args.samplings}), train or report, got {args.only!r}")
    return args


# -- the evaluation set ----------------------------------------------------------------------------------------


def evaluation_set(space: Any, args: Any) -> list[dict[str, Any]]:
    """Rows {name, spec, family, test_accuracy_by_seed (None until trained), source}."""
    rows: list[dict[str, Any]] = []
    if str(args.trained_from) not in ("", "."):
        doc = read_json(args.trained_from)
        for r in doc["retrain"]:
            if r["epochs"] != args.train_epochs:
                raise SystemExit(f"{args.trained_from}: {r['name']} trained {r['epochs']} epochs, "
                                 f"--train-epochs is {args.train_epochs}")
            rows.append({"name": r["name"], "spec": r["spec"], "family": r["family"],
                         "test_accuracy_by_seed": r["test_accuracy_by_seed"],
                         "source": args.trained_from.name})
    known = {H.tag(r["spec"]) for r in rows}
    fam_name, family = H.hand_family(space)
    for width, spec in family:
        if width in args.family_widths and H.tag(spec.to_dict()) not in known:
            rows.append({"name": f"{fam_name} ×{width}", "spec": spec.to_dict(), "family": True,
                         "test_accuracy_by_seed": None, "source": "trained here"})
    for i in range(args.random_archs):
        spec = space.sample(np.random.default_rng([20261123, i]))
        if H.tag(spec.to_dict()) not in known:
            rows.append({"name": f"random {i}", "spec": spec.to_dict(), "family": False,
                         "test_accuracy_by_seed": None, "source": "trained here"})
    return rows


def train_missing(rows: list[dict[str, Any]], data: tuple[Any, Any, Any], space: Any, args: Any,
                  *, only_cached: bool) -> None:
    """Train (seed 0) each row without an accuracy, in a resumable run dir, and fill its accuracy in; with
    `only_cached`, fill in only what a finished run dir holds."""
    cfg = dataclasses.replace(H.recipe(args, args.train_epochs), seed=0)
    for row in reversed(rows) if args.reverse else rows:
        if row["test_accuracy_by_seed"] is not None:
            continue
        spec = ArchSpec.from_dict(row["spec"])
        run_dir = H.scratch_dir(args.work_dir, "train", spec, cfg, len(data[0]))
        if only_cached and not (run_dir / T.MODEL_NAME).is_file():
            continue
        acc, row["train_seconds"] = H.train_from_scratch(space, spec, cfg, data, run_dir, row["name"])
        row["test_accuracy_by_seed"] = [acc]


# -- supernets and proxies -------------------------------------------------------------------------------------


def supernet(sampling: str, space: Any, train: Any, args: Any) -> tuple[Any, Path, dict[str, Any]]:
    cfg = H.recipe(args, args.supernet_epochs)
    net = space.supernet(num_classes=10, input_shape=H.SHAPE)
    body: list[Any] = [SPACE, dataclasses.asdict(cfg), len(train), ""]  # nas_hsconas's tag for uniform
    if sampling != "uniform":
        body += [sampling, args.n_random]
    run_dir = args.work_dir / f"supernet-{H.tag(body)}"
    H.log(f"supernet ({sampling}): {args.supernet_epochs} epochs on {len(train)} images in {run_dir}")
    res = T.fit_supernet(net, train, cfg, run_dir=run_dir, progress=False,
                         log=lambda s: H.log(f"supernet {sampling} {s}"), seed_paths=0,
                         augment_default=D.DATASETS.get("cifar10").augment, path_sampling=sampling,
                         n_random=args.n_random)
    last = res.history[-1]
    return net, run_dir, {"sampling": sampling, "n_random": args.n_random if sampling != "uniform" else None,
                          "epochs": args.supernet_epochs, "train_seconds": res.train_seconds,
                          "final_train_loss": last.train_loss, "final_train_acc": last.train_acc}


def proxies(net: Any, run_dir: Path, rows: list[dict[str, Any]], data: tuple[Any, Any, Any], args: Any) -> list[float]:
    train, val, _ = data
    score = H.Scorer(net, train, val, bn_batches=args.bn_batches, batch_size=64, eval_batch_size=64,
                     path=run_dir / f"scores-bn{args.bn_batches}-val{len(val)}.jsonl", seed=0)
    return [score(ArchSpec.from_dict(r["spec"])) for r in rows]


def ranking(proxy: list[float], trained: list[float]) -> dict[str, float]:
    tau = stats.kendalltau(proxy, trained).statistic
    rho = stats.spearmanr(proxy, trained).statistic
    best = int(np.argmax(proxy))
    return {"kendall_tau": float(tau), "spearman_rho": float(rho),
            "top1_regret": float(max(trained) - trained[best]), "proxy_top1": best}


# -- report ----------------------------------------------------------------------------------------------------


def markdown(doc: dict[str, Any]) -> str:
    rows, sn = doc["rows"], doc["supernets"]
    names = [s["sampling"] for s in sn]
    out = [f"# Supernet proxy against trained accuracy (`{SPACE}`, {len(rows)} networks)", "",
           f"Bundled CIFAR-10 subset, 4,500 train / 500 validation (proxy) / 1,000 test (trained accuracy) images; "
           f"each supernet {doc['settings']['supernet_epochs']} epochs (batch 64, lr 0.05, 1 thread); trained "
           f"networks {doc['settings']['train_epochs']} epochs from scratch. Proxy: validation accuracy of the path "
           f"after BN re-estimation ({doc['settings']['bn_batches']} batches of 64). Kendall's tau and Spearman's "
           "rho between proxy and trained test accuracy; top-1 regret: best trained accuracy in the set minus the "
           "trained accuracy of the proxy's favourite. Wall "
           f"{doc['wall_s'] / 60:.1f} min this run.", "",
           "| path sampling | supernet train s | final train loss (a uniform path) | Kendall tau | Spearman rho | "
           "top-1 regret (pt) | proxy's favourite |", "|---|---:|---:|---:|---:|---:|---|"]
    for s in sn:
        r = s["ranking"]
        out.append(f"| {s['sampling']}" + (f" (+{s['n_random']} random)" if s["n_random"] else "") +
                   f" | {s['train_seconds']:.0f} | {s['final_train_loss']:.3f} | {r['kendall_tau']:.2f} | "
                   f"{r['spearman_rho']:.2f} | {100 * r['top1_regret']:.1f} | {rows[r['proxy_top1']]['name']} |")
    out += ["", "| network | trained test acc. (%) | " + " | ".join(f"proxy {n} (%)" for n in names) + " | source |",
            "|---|---:|" + "---:|" * len(names) + "---|"]
    for r in sorted(range(len(rows)), key=lambda k: -rows[k]["test_accuracy"]):
        row = rows[r]
        acc = f"{100 * row['test_accuracy']:.1f}"
        if len(row["test_accuracy_by_seed"]) > 1:
            acc += " (" + ", ".join(f"{100 * a:.1f}" for a in row["test_accuracy_by_seed"]) + ")"
        out.append(f"| {row['name']} | {acc} | " + " | ".join(f"{100 * s['proxy'][r]:.1f}" for s in sn) +
                   f" | {row['source']} |")
    return "\n".join(out) + "\n"


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    space = get_space(SPACE)
    data = H.load_data(args)
    rows = evaluation_set(space, args)
    if args.only and args.only.startswith("supernet:"):
        supernet(args.only.removeprefix("supernet:"), space, data[0], args)
        return
    if args.only in (None, "train"):
        train_missing(rows, data, space, args, only_cached=False)
        if args.only == "train":
            return
    train_missing(rows, data, space, args, only_cached=True)
    missing = [r["name"] for r in rows if r["test_accuracy_by_seed"] is None]
    if missing:
        raise SystemExit(f"not trained yet: {', '.join(missing)} (run --only train first)")
    for r in rows:
        r["test_accuracy"] = float(np.mean(r["test_accuracy_by_seed"]))
    trained = [r["test_accuracy"] for r in rows]
    sn_docs = []
    for sampling in args.samplings:
        net, run_dir, info = supernet(sampling, space, data[0], args)
        proxy = proxies(net, run_dir, rows, data, args)
        sn_docs.append({**info, "supernet_dir": run_dir.name, "proxy": proxy, "ranking": ranking(proxy, trained)})
        H.log(f"{sampling}: Kendall tau {sn_docs[-1]['ranking']['kendall_tau']:.2f}")
    doc = {"benchmark": "supernet_ranking", "space": SPACE, "machine": machine_info(),
           "settings": {k: H.repo_relative(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
           "rows": rows, "supernets": sn_docs, "wall_s": time.perf_counter() - t0}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out.with_suffix(".json"), doc)
    atomic_write_text(args.out.with_suffix(".md"), markdown(doc))
    H.log(f"wrote {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
