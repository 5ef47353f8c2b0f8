"""Does uniform single-path training of the MBConv supernet learn? OFA-shared vs per-op weights, side by side.

Both supernets of the `mbconv` space are trained by `train.fit_supernet` (uniform single-path sampling, the same
seeded paths, batches and recipe) on the same CIFAR-10 images; after each epoch we record the training loss, and
at the end the validation accuracy of `--paths` random paths, each after BatchNorm re-estimation (the search's
proxy, `_SubnetScorer`). A supernet whose paths sit at chance (10%) ranks nothing.

    python benchmarks/supernet_sharing.py                       # bundled subset: 4,500 train images, 3 epochs
    python benchmarks/supernet_sharing.py --data-dir ../shared/data --n-train 20000 --epochs 2

Writes benchmarks/results/supernet_sharing.{json,md} (atomically).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from devicefit import data as D
from devicefit import train as T
from devicefit.core import atomic_write_json, atomic_write_text, machine_info
from devicefit.pipelines._stage_search import _SubnetScorer
from devicefit.space import WEIGHT_SHARING, get_space

ROOT = Path(__file__).resolve().parent


def run(sharing: str, train: D.ArrayDataset, val: D.ArrayDataset, args: argparse.Namespace) -> dict:
    space = get_space("mbconv")
    torch.manual_seed(0)
    net = space.supernet(num_classes=10, weight_sharing=sharing)
    cfg = T.TrainConfig(epochs=args.epochs, batch_size=64, lr=args.lr, warmup_epochs=min(1.0, args.epochs / 4),
                        threads=1, seed=0)
    t0 = time.perf_counter()
    res = T.fit_supernet(net, train, cfg, progress=False, seed_paths=0, augment_default="crop_flip",
                         log=lambda s: print(f"  {sharing}: {s}", flush=True))
    train_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        score = _SubnetScorer(net, train, val, bn_batches=4, batch_size=64, path=Path(tmp) / "s.jsonl", seed=0)
        rng = np.random.default_rng(123)
        accs = [score(space.sample(rng)) for _ in range(args.paths)]
    print(f"  {sharing}: path accuracies {np.round(100 * np.array(accs), 1).tolist()}", flush=True)
    return {"sharing": sharing, "params": sum(p.numel() for p in net.parameters()),
            "train_loss": [h.train_loss for h in res.history], "train_acc": [h.train_acc for h in res.history],
            "train_s": train_s, "path_accuracies": accs, "path_acc_mean": float(np.mean(accs)),
            "path_acc_min": float(np.min(accs)), "path_acc_max": float(np.max(accs))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="full CIFAR-10 copy (default: the bundled subset)")
    ap.add_argument("--n-train", type=int, default=0, help="training images (0 = all of the split)")
    ap.add_argument("--n-val", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--paths", type=int, default=10, help="random paths scored at the end")
    ap.add_argument("--name", default="supernet_sharing")
    args = ap.parse_args()
    full = D.load_dataset("cifar10", "train", args.data_dir)
    train, val = D.split_train_val(full, 0.1, seed=0)
    rng = np.random.default_rng(0)  # random subsets: the split is stored class by class
    if args.n_train and args.n_train < len(train):
        train = train.subset(np.sort(rng.permutation(len(train))[: args.n_train]))
    if args.n_val < len(val):
        val = val.subset(np.sort(rng.permutation(len(val))[: args.n_val]))
    rows = [run(s, train, val, args) for s in WEIGHT_SHARING]
    result = {"benchmark": "supernet_sharing", "args": vars(args), "n_train": len(train), "n_val": len(val),
              "rows": rows, "machine": machine_info()}
    out = ROOT / "results" / args.name
    atomic_write_json(out.with_suffix(".json"), result)
    lines = ["# Uniform single-path training of the `mbconv` supernet: OFA-shared vs per-op weights\n",
             f"{len(train)} CIFAR-10 training images, batch 64, SGD lr {args.lr} (cosine), {args.epochs} epoch(s), "
             f"the same seeded paths for both; proxy = validation accuracy ({len(val)} images) of {args.paths} "
             "random paths after BatchNorm re-estimation (chance: 10%).\n",
             "| weights | parameters | train loss per epoch | train acc. last epoch | path acc. mean (min–max) | "
             "train time |", "|---|---:|---|---:|---|---:|"]
    for r in rows:
        lines.append(f"| {r['sharing']} | {r['params']:,} | {' → '.join(f'{v:.3f}' for v in r['train_loss'])} | "
                     f"{100 * r['train_acc'][-1]:.1f}% | {100 * r['path_acc_mean']:.1f}% "
                     f"({100 * r['path_acc_min']:.1f}–{100 * r['path_acc_max']:.1f}%) | {r['train_s'] / 60:.1f} min |")
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
