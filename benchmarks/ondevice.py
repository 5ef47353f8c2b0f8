"""On-device learning under a memory budget: adapt a deployed network to data it never saw with each
update scheme, and report accuracy before/after, modelled and measured training memory and time per step.

Scenarios (real data):
  fsdd   DS-CNN trained on five FSDD speakers, adapted to the held-out sixth (`--speaker`).
  cifar  ResNet-8 trained on the bundled CIFAR-10 subset, adapted to its test images under a deterministic
         shift (contrast ×0.5, brightness +0.2, Gaussian noise σ 0.05 on the [0, 1] scale, seed 0).
The new data is split per class, seeded: 20% adapts (the selector probes on 70% of that and scores on
30%), 80% is held out for the accuracy. Every scheme trains with the same recipe (SGD momentum 0.9,
lr 0.01 constant, batch 8, `--epochs`), so the comparison is the scheme, not the tuning.

Memory: modelled (`devicefit.hardware.train_memory`), the exact saved-activation bytes of one batch through
saved-tensor hooks, the peak of torch's CPU allocator over one step (profiler memory events), and the
peak-RSS growth of one training step in a fresh process (`measure_step_rss`, median of `--rss-repeats`).
Time per step: median (p10/p90) of `--timed-steps` steps after 3 warm-up steps, 1 torch thread, in this
process. Base networks train once into benchmarks/runs/ (kept).

    python benchmarks/ondevice.py --scenario fsdd            # then --scenario cifar
    python benchmarks/ondevice.py --scenario fsdd --quick    # smoke run: fewer epochs and repeats
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from devicefit import data as D
from devicefit import models as M
from devicefit import train as T
from devicefit.core import ArchSpec, atomic_write_json, atomic_write_text, machine_info, read_json
from devicefit.hardware import summarize_samples, train_memory
from devicefit.pipelines import DataConfig, ModelConfig, TrainJobConfig, run_train_job
from devicefit.pipelines._adapt_job import split_new_data
from devicefit.reports import Column, format_bytes, markdown_table
from devicefit.train import step_allocator_peak_bytes

HERE = Path(__file__).resolve().parent
BUDGET_BYTES = 256 * 1024
SCHEMES: dict[str, T.SchemeConfig | None] = {  # None: the budgeted selector
    "full": T.SchemeConfig("full"),
    "last-layer": T.SchemeConfig("last-k", last_k=1),
    "last-2": T.SchemeConfig("last-k", last_k=2),
    "bias (stock ops)": T.SchemeConfig("bias", lean=False),
    "bias (lean)": T.SchemeConfig("bias"),
    "sparse (last 2 layers, 50% ch.)": T.SchemeConfig("sparse", layers=(-1, -2), channel_ratio=0.5),
    "tinytl (lite residual)": T.SchemeConfig("tinytl"),
    "auto @ 256 KiB": None,
}


def _base_run(name: str, cfg: TrainJobConfig) -> tuple[ArchSpec, torch.nn.Module]:
    m = run_train_job(cfg, progress=False, echo=print)
    print(f"base {name}: test accuracy {m['test_accuracy']:.4f} ({m['data_source']})")
    spec = ArchSpec.from_dict(read_json(Path(m["run_dir"]) / "spec.json"))
    return spec, T.load_weights(M.build(spec), Path(m["run_dir"]) / "model.pt").eval()


def fsdd_scenario(args: argparse.Namespace) -> dict[str, Any]:
    options = {"split_by": "speaker", "test_speakers": [args.speaker]}
    cfg = TrainJobConfig(data=DataConfig("fsdd", val_fraction=0.0, options=options), model=ModelConfig("dscnn"),
                         train=T.TrainConfig(epochs=args.base_epochs, batch_size=64, optimizer="adamw", lr=3e-3,
                                             weight_decay=0.01, threads=1),
                         run_dir=str(HERE / "runs" / f"ondevice-dscnn-fsdd-without-{args.speaker}-{args.base_epochs}"))
    spec, model = _base_run("fsdd", cfg)
    new = D.load_fsdd("test", split_by="speaker", test_speakers=(args.speaker,))
    return {"name": f"fsdd: DS-CNN, 5 speakers → held-out speaker {args.speaker!r}", "spec": spec, "model": model,
            "new": new}


def shift_images(ds: D.ArrayDataset, seed: int = 0) -> D.ArrayDataset:
    """Contrast ×0.5 about each image's mean, brightness +0.2, Gaussian noise σ 0.05 ([0, 1] scale), seeded."""
    x = ds.x.astype(np.float32) / 255.0
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    x = (x - mean) * 0.5 + mean + 0.2 + np.random.default_rng(seed).normal(0, 0.05, x.shape).astype(np.float32)
    shifted = np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)
    return dataclasses.replace(ds, x=shifted, split=f"{ds.split}/shifted",
                               meta={**ds.meta, "shift": "contrast x0.5, brightness +0.2, noise sigma 0.05, seed 0"})


def cifar_scenario(args: argparse.Namespace) -> dict[str, Any]:
    cfg = TrainJobConfig(data=DataConfig("cifar10"), model=ModelConfig("resnet8"),
                         train=T.TrainConfig(epochs=args.base_epochs, threads=1),
                         run_dir=str(HERE / "runs" / f"ondevice-resnet8-cifar10-subset-{args.base_epochs}"))
    spec, model = _base_run("cifar", cfg)
    new = shift_images(D.load_dataset("cifar10", "test"))
    return {"name": "cifar: ResNet-8 (bundled subset) → shifted test images", "spec": spec, "model": model,
            "new": new}


def _adapt_cfg(args: argparse.Namespace) -> T.TrainConfig:
    return T.TrainConfig(epochs=args.epochs, batch_size=8, optimizer="sgd", lr=0.01, momentum=0.9, schedule="constant",
                         warmup_epochs=0.0, weight_decay=0.0, label_smoothing=0.0, threads=1)


def _batch(ds: D.ArrayDataset, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return next(iter(D.BatchLoader(ds, n)))


def time_steps(prepared: torch.nn.Module, ds: D.ArrayDataset, cfg: T.TrainConfig, steps: int) -> dict[str, Any]:
    """Wall time of whole training steps (forward, loss, backward, optimizer step), ms."""
    x, y = _batch(ds, cfg.batch_size)
    prepared.train()
    opt = T.build_optimizer(prepared, cfg)
    samples = []
    for i in range(3 + steps):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(prepared(x), y).backward()
        opt.step()
        if i >= 3:
            samples.append(1e3 * (time.perf_counter() - start))
    return summarize_samples(samples, max_cv=0.25).to_dict()


def run_scheme(label: str, scheme: T.SchemeConfig | None, sc: dict[str, Any], adapt_ds: D.ArrayDataset,
               heldout: D.ArrayDataset, args: argparse.Namespace) -> dict[str, Any]:
    cfg, model = _adapt_cfg(args), sc["model"]
    shape, classes = tuple(sc["spec"].as_kwargs()["input_shape"]), sc["spec"].as_kwargs()["num_classes"]
    row: dict[str, Any] = {"scheme": label}
    if scheme is None:
        probe, val = split_new_data(adapt_ds, 0.7, seed=0)
        sel = T.BudgetedSelector(BUDGET_BYTES, cfg, probe_epochs=args.probe_epochs, ratios=(1.0, 0.5, 0.25))
        start = time.perf_counter()
        scheme = sel.fit(model, probe, val, input_shape=shape, num_classes=classes).scheme_
        row["selection_seconds"] = time.perf_counter() - start
        row["selected"] = {"layers": list(scheme.layers), "ratios": list(scheme.layer_ratios),
                           "bias_layers": scheme.bias_layers}
    adapted, result = T.adapt(model, adapt_ds, scheme, cfg, input_shape=shape, num_classes=classes)
    prepared = T.prepare(model, scheme)
    x, y = _batch(adapt_ds, cfg.batch_size)
    row.update(accuracy_after=T.evaluate(adapted, heldout)["accuracy"], memory=result.memory.to_dict(),
               hooks_saved_bytes=T.saved_activation_bytes(prepared.train(), x, y),
               adapt_seconds=result.train.train_seconds, step_ms=time_steps(prepared, adapt_ds, cfg, args.timed_steps))
    rss_cfg = dataclasses.replace(cfg, batch_size=args.rss_batch)
    rss = T.measure_step_rss(prepared, shape, classes, batch_size=args.rss_batch, cfg=rss_cfg, repeats=args.rss_repeats)
    at_rss = T.modelled_memory(prepared, shape, rss_cfg)
    row["rss_step_bytes"], row["rss_spread"], row["model_step_at_rss_batch"] = rss.value, rss.spread, at_rss.step_bytes
    xr, yr = _batch(adapt_ds, args.rss_batch)
    row["alloc_step_bytes"] = step_allocator_peak_bytes(copy.deepcopy(prepared), xr, yr, rss_cfg)
    row["rss_inference_bytes"] = rss.method["inference_delta_bytes"]
    row["rss_over_inference"] = rss.value - row["rss_inference_bytes"]
    row["model_over_inference"] = max(at_rss.step_bytes - sc["inference_model_bytes"], 0)
    print(f"  {label:34s} acc {row['accuracy_after']:.4f}  budget bytes {row['memory']['budget_bytes']:>9,}  "
          f"hooks {row['hooks_saved_bytes']:>9,}  rss {rss.value:>11,.0f}  step {row['step_ms']['median']:.2f} ms")
    return row


def inference_bytes(model: torch.nn.Module, shape: tuple[int, ...], batch_size: int) -> int:
    """Modelled peak activation memory of a no-grad forward (a fully frozen copy keeps nothing)."""
    frozen = copy.deepcopy(model)
    for p in frozen.parameters():
        p.requires_grad_(False)
    return train_memory(frozen, shape, batch_size=batch_size).forward_peak_bytes


def _ratios(rows: list[dict[str, Any]], before: float) -> None:
    full = next(r for r in rows if r["scheme"] == "full")
    gain_full = full["accuracy_after"] - before
    for r in rows:
        m, fm = r["memory"], full["memory"]
        r["gain_recovered"] = (r["accuracy_after"] - before) / gain_full if gain_full > 0 else None
        r["model_memory_ratio"] = fm["budget_bytes"] / max(m["budget_bytes"], 1)
        r["rss_ratio"] = full["rss_step_bytes"] / max(r["rss_step_bytes"], 1)
        r["hooks_vs_model"] = m["saved_activation_bytes"] / max(r["hooks_saved_bytes"], 1)
        r["rss_vs_model_step"] = r["rss_step_bytes"] / max(r["model_step_at_rss_batch"], 1)
        r["alloc_vs_model_step"] = r["alloc_step_bytes"] / max(r["model_step_at_rss_batch"], 1)
        over = r["rss_over_inference"]
        r["rss_over_inference_ratio"] = full["rss_over_inference"] / over if over > 64 * 1024 else None


COLUMNS = [
    Column("scheme", "scheme"),
    Column("accuracy_after", "held-out acc.", lambda v: f"{100 * v:.2f}%", "right"),
    Column("gain_recovered", "gain vs full", lambda v: "—" if v is None else f"{100 * v:.0f}%", "right"),
    Column("budget", "act.+grad+opt (model)", format_bytes, "right"),
    Column("hooks_saved_bytes", "saved act. (hooks)", format_bytes, "right"),
    Column("hooks_vs_model", "model/hooks", lambda v: f"{v:.3f}", "right"),
    Column("model_memory_ratio", "full/this (model)", lambda v: f"{v:.1f}×", "right"),
    Column("model_step_at_rss_batch", "step peak (model, RSS batch)", format_bytes, "right"),
    Column("alloc_step_bytes", "step peak torch alloc.", format_bytes, "right"),
    Column("alloc_vs_model_step", "alloc./model", lambda v: f"{v:.2f}", "right"),
    Column("rss_step_bytes", "step peak RSS Δ", format_bytes, "right"),
    Column("rss_vs_model_step", "RSS/model", lambda v: f"{v:.2f}", "right"),
    Column("rss_ratio", "full/this (RSS)", lambda v: f"{v:.1f}×", "right"),
    Column("model_over_inference", "step − inference (model)", format_bytes, "right"),
    Column("rss_over_inference", "step − inference (RSS)", format_bytes, "right"),
    Column("rss_over_inference_ratio", "full/this (RSS − inf.)", lambda v: "—" if v is None else f"{v:.1f}×",
           "right"),
    Column("step", "ms/step median (p10–p90)", str, "right"),
]


def _table(rows: list[dict[str, Any]]) -> str:
    flat = [{**r, "budget": r["memory"]["budget_bytes"],
             "step": f"{r['step_ms']['median']:.2f} ({r['step_ms']['p10']:.2f}–{r['step_ms']['p90']:.2f})"}
            for r in rows]
    return markdown_table(flat, COLUMNS)


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    sc = (fsdd_scenario if args.scenario == "fsdd" else cifar_scenario)(args)
    adapt_ds, heldout = split_new_data(sc["new"], 0.2, seed=0)
    shape = tuple(sc["spec"].as_kwargs()["input_shape"])
    sc["inference_model_bytes"] = inference_bytes(sc["model"], shape, args.rss_batch)
    before = T.evaluate(sc["model"], heldout)["accuracy"]
    print(f"{sc['name']}: adapt {len(adapt_ds)} / held-out {len(heldout)}; accuracy before {before:.4f}")
    rows = [run_scheme(label, scheme, sc, adapt_ds, heldout, args) for label, scheme in SCHEMES.items()]
    _ratios(rows, before)
    return {"scenario": sc["name"], "model": str(sc["spec"]), "data_source": sc["new"].source,
            "n_adapt": len(adapt_ds), "n_heldout": len(heldout), "accuracy_before": before,
            "budget_bytes": BUDGET_BYTES, "inference_model_bytes": sc["inference_model_bytes"],
            "adapt_recipe": dataclasses.asdict(_adapt_cfg(args)), "rows": rows,
            "args": vars(args), "machine": machine_info(), "torch_threads": 1}


def write(result: dict[str, Any], name: str) -> None:
    out = HERE / "results"
    atomic_write_json(out / f"{name}.json", result)
    head = (f"### {result['scenario']}\n\n{result['model']}; new data {result['data_source']}; adapt "
            f"{result['n_adapt']} / held-out {result['n_heldout']}; held-out accuracy before adaptation "
            f"{100 * result['accuracy_before']:.2f}%. Memory at batch 8 (the adaptation batch), fp32, SGD momentum; "
            f"'act.+grad+opt' is what the 256 KiB budget counts. RSS columns at batch {result['args']['rss_batch']} "
            f"(sub-MiB figures drown in allocator noise), against the model at that batch; 'inference' is a no-grad "
            f"forward of the same batch. RSS: {T.RSS_METHOD}, median of {result['args']['rss_repeats']}. "
            f"Machine: {result['machine'].get('cpu_model', '?')}, 1 torch thread, shared with other jobs "
            f"(times are noisy).\n\n")
    atomic_write_text(out / f"{name}.md", head + _table(result["rows"]))
    print(f"wrote {out / name}.json and .md")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", choices=("fsdd", "cifar"), default="fsdd")
    p.add_argument("--speaker", default="lucas", help="FSDD speaker held out of training")
    p.add_argument("--quick", action="store_true", help="smoke run: 8/3 base epochs, 5 adapt epochs, 1 RSS repeat")
    p.add_argument("--base-epochs", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--probe-epochs", type=int, default=2)
    p.add_argument("--timed-steps", type=int, default=20)
    p.add_argument("--rss-repeats", type=int)
    p.add_argument("--rss-batch", type=int, default=64, help="batch of the RSS probe (large enough to measure)")
    p.add_argument("--name", help="results file stem (default ondevice-<scenario>[-quick])")
    args = p.parse_args()
    base_default = {"fsdd": 8, "cifar": 3} if args.quick else {"fsdd": 20, "cifar": 15}
    args.base_epochs = args.base_epochs or base_default[args.scenario]
    args.epochs = args.epochs or (5 if args.quick else 15)
    args.rss_repeats = args.rss_repeats or (1 if args.quick else 3)
    write(run(args), args.name or f"ondevice-{args.scenario}{'-quick' if args.quick else ''}")


if __name__ == "__main__":
    main()
