"""Compression on the zoo's trained CIFAR-10 models, every variant measured side by side in one run.

For each trained run (MobileNetV2 width 0.35, ResNet-8): fp32 ONNX; our int8 PTQ (U8S8 QDQ, per-channel) with
each calibrator, with bias correction, and per-tensor with and without cross-layer equalization; w4a8 with and
without AdaRound; ONNX Runtime's default `quantize_static` recipe as the peer baseline (and its U8S8
per-channel setting); NNCF's default PTQ when `--nncf-python` names a venv that has it; structured pruning
latency-driven (pruned in rounds until host-ort measures it `--prune-speedup` times faster than fp32, then
fine-tuned, optionally distilled from the unpruned model) and at a fixed channel ratio, each alone and followed
by int8; unstructured magnitude pruning; LSQ QAT at 8/4/2 bits and mixed precision (PyTorch, fake-quantized).
Each ONNX row: test accuracy, file bytes, MACs, and batch-1 ONNX Runtime latency (median over interleaved
rounds, all models in one process) with its ratio to fp32. A `ceiling` section times plain convolution stacks of
growing width in fp32 and int8: the int8 speed-up this CPU allows at all; a `width` section does the same for
one zoo design (`--width-model`, default MobileNetV2) at several width multipliers (`--widths`).

    python benchmarks/compression.py --data-dir ../shared/data --runs resnet8-cifar10-full --distill \
        --qat-epochs 2 --finetune-epochs 4 --prune-steps 1                   # the full run (~45 min, 1 thread)
    python benchmarks/compression.py --runs mobilenet_v2-cifar10-subset --distill --name compression-mbv2-subset
    python benchmarks/compression.py --data-dir ../shared/data --runs resnet8-cifar10-full --distill \
        --sections qat --qat w4 --qat-epochs 5 --name compression-lsq   # one part alone, into its own file
    python benchmarks/compression.py --runs --sections width --name compression-width   # int8 gain by width
    python benchmarks/compression.py --quick                                  # a smoke run (minutes)

Writes benchmarks/results/<name>.{json,md} atomically (default name compression[-quick]). Calibration uses
train images only.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from devicefit import data as D
from devicefit import models as M
from devicefit import train as T
from devicefit.compress import (
    INT8_COMPUTE_OPS,
    LatencyPruneConfig,
    MagnitudeConfig,
    MagnitudePruner,
    PostTrainingQuantizer,
    PruneConfig,
    PTQConfig,
    StructuredPruner,
    evaluate_onnx,
    prune_to_latency,
    runtime_op_counts,
)
from devicefit.core import ArchSpec, atomic_write_json, atomic_write_text, machine_info, read_json
from devicefit.hardware import measure_interleaved
from devicefit.nn import analyze, export_onnx

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
RUNS = ("mobilenet_v2-cifar10-subset", "resnet8-cifar10-full")
SHAPE = (3, 32, 32)
SECTIONS = ("ptq", "prune", "qat", "ceiling", "width")
WIDTHS = (0.35, 0.5, 0.75, 1.0, 1.4)


def load_run(name: str) -> nn.Module:
    run = ROOT / "runs" / name
    model = M.build(ArchSpec.from_dict(read_json(run / "spec.json")))
    T.load_weights(model, run / "model.pt")
    return model.eval()


def relative(source: str) -> str:
    """A data source as a path relative to the repository (results carry no machine-specific paths)."""
    path = Path(source.split(" ")[0])
    return os.path.relpath(path, ROOT.parent) + source[len(str(path)):] if path.is_absolute() else source


def random_subset(ds: D.ArrayDataset, n: int) -> D.ArrayDataset:
    """A seeded random subset of `n` items (the files are ordered by class, so a prefix would not do)."""
    pick = np.random.default_rng(0).permutation(len(ds))[:n]
    return ds.subset(np.sort(pick))


def ptq_variants(quick: bool, adaround_iters: int = 0) -> dict[str, PTQConfig]:
    out = {"int8 minmax (ours)": PTQConfig(),
           "int8 percentile (ours)": PTQConfig(calibrator="percentile"),
           "int8 mse (ours)": PTQConfig(calibrator="mse"),
           "int8 entropy (ours)": PTQConfig(calibrator="entropy"),
           "int8 percentile + bias corr. (ours)": PTQConfig(calibrator="percentile", bias_correction=True),
           "int8 per-tensor, no CLE": PTQConfig(per_channel=False),
           "int8 per-tensor + CLE": PTQConfig(per_channel=False, equalize=True),
           "w4a8 nearest (ours)": PTQConfig(calibrator="percentile", weight_bits=4),
           "w4a8 AdaRound (ours)": PTQConfig(calibrator="percentile", weight_bits=4, adaround=True,
                                             adaround_iters=adaround_iters or (50 if quick else 300))}
    if quick:
        out = {k: v for k, v in out.items() if "mse" not in k and "entropy" not in k}
    return out


def weight_bytes(path: Path, bits: int) -> int:
    """Bytes of the weight tensors (initializers with >= 2 dims) stored at `bits` bits (float ones at 32)."""
    import onnx

    total = 0.0
    for init in onnx.load(str(path)).graph.initializer:
        if len(init.dims) >= 2:
            n = int(np.prod(init.dims))
            total += n * (4 if init.data_type == onnx.TensorProto.FLOAT else bits / 8)
    return int(total)


# Run by the python of a separate venv with nncf (not a devicefit dependency): NNCF's default PTQ of an ONNX file.
NNCF_SCRIPT = """
import sys
import nncf, numpy as np, onnx
fp32, calib, out = sys.argv[1:4]
model, x = onnx.load(fp32), np.load(calib)
name = model.graph.input[0].name
dataset = nncf.Dataset([x[i:i + 1] for i in range(len(x))], lambda item: {name: item})
onnx.save(nncf.quantize(model, dataset, subset_size=len(x)), out)
"""


def nncf_ptq(python: str, fp32: Path, out: Path, calib: np.ndarray) -> Path:
    """NNCF's default post-training quantization (its ONNX backend) run by `python`, on the same images."""
    import subprocess

    np.save(out.with_suffix(".npy"), calib)
    subprocess.run([python, "-c", NNCF_SCRIPT, str(fp32), str(out.with_suffix(".npy")), str(out)], check=True,
                   capture_output=True, text=True)
    return out


def nncf_version(python: str) -> str:
    """What the results record instead of the venv's path: e.g. 'nncf 3.4.0 (separate venv)'."""
    import subprocess

    done = subprocess.run([python, "-c", "import nncf; print(nncf.__version__)"], check=True, capture_output=True,
                          text=True)
    return f"nncf {done.stdout.strip()} (separate venv)"


def ort_default(fp32: Path, out: Path, calib: np.ndarray, **overrides: Any) -> Path:
    """ONNX Runtime's `quantize_static` with its defaults (QDQ, int8 activations, per-tensor, min-max),
    or with `overrides` (e.g. the U8S8 per-channel setting), after its recommended pre-processing."""
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calib[i:i + 1] for i in range(len(calib)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.it, None)
            return None if x is None else {"input": x}

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32), str(pre))
    kw = {k: getattr(QuantType, v) if k.endswith("_type") else v for k, v in overrides.items()}
    quantize_static(str(pre), str(out), Reader(), **kw)
    return out


def finetune_fn(train: D.ArrayDataset, epochs: int, teacher: nn.Module | None,
                lr: float = 0.01) -> Callable[[nn.Module], nn.Module]:
    def finetune(net: nn.Module) -> nn.Module:
        cfg = T.TrainConfig(epochs=epochs, lr=lr, warmup_epochs=0.0, threads=1, distill_alpha=0.5)
        T.fit(net, train, cfg, teacher=teacher, augment_default="crop_flip", progress=False,
              log=lambda line: print(f"    fine-tune {line}", flush=True))
        return net
    return finetune


def interleaved_latency(paths: dict[str, Path], rounds: int, repeats: int,
                        shape: tuple[int, ...] = SHAPE) -> dict[str, dict[str, float]]:
    """Every file timed side by side (`measure_interleaved`): median of round medians, its p10/p90, and the
    paired (per-round) speed-up against the first file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # spread is reported per row instead
        m = measure_interleaved(paths, "host-ort", input_shape=shape, rounds=rounds, repeats=repeats, threads=1)
    first = next(iter(paths))
    return {k: {"median_ms": m.median_ms(k), "p10_ms": float(np.percentile(v, 10)),
                "p90_ms": float(np.percentile(v, 90)), "paired_speedup": m.ratio(first, k)}
            for k, v in m.rounds_ms.items()}


def bench_model(run: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    model = load_run(run)
    test = D.load_dataset("cifar10", "test", args.data_dir)
    train_full = D.load_dataset("cifar10", "train", args.data_dir)
    if args.n_test:
        test = random_subset(test, args.n_test)
    calib_ds = D.calibration_split(train_full, args.n_calib, seed=0)
    calib = D.to_float_tensor(calib_ds, calib_ds.x).numpy()
    rows: dict[str, dict[str, Any]] = {}

    def add(name: str, path: Path, macs: int, seconds: float, extra: dict[str, Any] | None = None,
            bits: int = 8) -> None:
        ops = runtime_op_counts(path)
        rows[name] = {"accuracy": evaluate_onnx(path, test)["accuracy"], "file_bytes": path.stat().st_size,
                      "weight_bytes": weight_bytes(path, bits),
                      "macs": macs, "int8_kernels": sum(v for k, v in ops.items() if k in INT8_COMPUTE_OPS),
                      "seconds": round(seconds, 1), "file": path.name, "order": len(rows), **(extra or {})}
        print(f"  {run} {name}: acc {rows[name]['accuracy']:.4f} ({seconds:.0f}s)", flush=True)

    macs = analyze(model, SHAPE).macs
    fp32 = export_onnx(model, SHAPE, tmp / f"{run}-fp32.onnx", dynamic_batch=True)
    add("fp32", fp32, macs, 0.0)
    if "ptq" in args.sections:
        ptq_rows(run, model, macs, fp32, calib, args, tmp, add)
    if "prune" in args.sections:
        prune_rows(run, model, train_full, calib, args, tmp, add)
    time_rows(rows, tmp, args)
    qat = qat_rows(model, train_full, test, calib, args) if "qat" in args.sections else {}
    return {"run": run, "n_test": len(test), "test_source": relative(test.source), "n_calibration": len(calib),
            "rows": rows, "qat": qat}


def ptq_rows(run: str, model: nn.Module, macs: int, fp32: Path, calib: np.ndarray, args: argparse.Namespace,
             tmp: Path, add: Callable[..., None]) -> None:
    """Our int8/w4 PTQ variants, ONNX Runtime's default recipe and NNCF's, all from the same calibration set."""
    for name, cfg in ptq_variants(args.quick, args.adaround_iters).items():
        t0 = time.perf_counter()
        q = PostTrainingQuantizer(cfg).calibrate(model, calib, SHAPE)
        add(name, q.save(tmp / f"{run}-ptq{len(name)}-{name[:12].replace(' ', '_')}.onnx"), macs,
            time.perf_counter() - t0, q.report_, bits=cfg.weight_bits)
    for name, kw in (("ORT quantize_static default", {}),
                     ("ORT quantize_static U8S8 per-channel", {"activation_type": "QUInt8", "per_channel": True})):
        t0 = time.perf_counter()
        add(name, ort_default(fp32, tmp / f"{run}-ort{len(kw)}.onnx", calib, **kw), macs, time.perf_counter() - t0)
    if args.nncf_python:
        t0 = time.perf_counter()
        add("NNCF quantize default", nncf_ptq(args.nncf_python, fp32, tmp / f"{run}-nncf.onnx", calib), macs,
            time.perf_counter() - t0)


def time_rows(rows: dict[str, dict[str, Any]], work: Path, args: argparse.Namespace) -> None:
    """Time every row's ONNX file (in `work`) interleaved, and set its latency and ratios to fp32."""
    files = {name: work / row["file"] for name, row in sorted(rows.items(), key=lambda kv: kv[0] != "fp32")}
    lat = interleaved_latency(files, args.rounds, args.repeats)
    for name, row in rows.items():
        row.update(lat[name], speedup_vs_fp32=lat[name]["paired_speedup"],
                   size_ratio_vs_fp32=rows["fp32"]["file_bytes"] / row["file_bytes"],
                   weight_ratio_vs_fp32=rows["fp32"]["weight_bytes"] / row["weight_bytes"])


def qat_rows(model: nn.Module, train_full: D.ArrayDataset, test: D.ArrayDataset, calib: np.ndarray,
             args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """LSQ QAT at 8/4/2 bits and mixed precision (weights at <= the 4-bit budget), simulated in PyTorch
    (fake quantization): accuracy only; ONNX Runtime has no sub-8-bit kernels to time. QAT trains further
    (distilled from the fp32 model), so the fp32 model fine-tuned alike is the control to compare against."""
    from devicefit.compress import LSQConfig, LSQQuantizer, choose_bit_widths, layer_sensitivity, quant_layers
    from devicefit.compress import weight_bytes as layer_bytes

    train, _ = D.split_train_val(train_full, 0.1, seed=0)
    if args.n_finetune:
        train = random_subset(train, args.n_finetune)
    x = torch.from_numpy(calib[:256])
    names = quant_layers(model)
    sens = layer_sensitivity(model, x[:128], bits=(2, 4, 8))
    budget = layer_bytes(model, {n: 4 for n in names})
    mixed = choose_bit_widths(model, sens, budget)
    configs = {f"LSQ w{b}a{b}": LSQConfig(weight_bits=b, act_bits=b) for b in (8, 4, 2) if f"w{b}" in args.qat}
    if "mixed" in args.qat:
        configs["LSQ mixed (2/4/8, 4-bit budget) a8"] = LSQConfig(act_bits=8, first_last_bits=None,
                                                                  bits_per_layer=mixed)
    out: dict[str, dict[str, Any]] = {"fp32 (PyTorch)": {"accuracy": T.evaluate(model, test)["accuracy"],
                                                          "weight_bytes": layer_bytes(model, {n: 32 for n in names})}}
    if args.qat_epochs:  # the control: the same extra training without quantization
        ref = copy.deepcopy(model)
        finetune_fn(train, args.qat_epochs, model)(ref)
        acc = T.evaluate(ref, test)["accuracy"]
        out["fp32 fine-tuned alike (control)"] = {**out["fp32 (PyTorch)"], "accuracy": acc, "order": 1}
    for name, cfg in configs.items():
        t0 = time.perf_counter()
        ft = finetune_fn(train, args.qat_epochs, model) if args.qat_epochs else None
        q = LSQQuantizer(cfg).fit(model, x, ft)
        out[name] = {"order": len(out), "accuracy": T.evaluate(q.model, test)["accuracy"],
                     "weight_bytes": layer_bytes(model, q.bits_),
                     "bits": q.bits_, "seconds": round(time.perf_counter() - t0, 1)}
        print(f"  {name}: acc {out[name]['accuracy']:.4f}", flush=True)
    return out


def prune_rows(run: str, model: nn.Module, train_full: D.ArrayDataset, calib: np.ndarray,
               args: argparse.Namespace, tmp: Path, add: Callable[..., None]) -> None:
    """Structured pruning two ways: latency-driven (rounds of pruning, each confirmed by measurement on
    host-ort, until the model runs `--prune-speedup` times faster than fp32, then a final fine-tune) and at a
    fixed channel ratio; each alone and followed by int8; and unstructured magnitude pruning."""
    train, _ = D.split_train_val(train_full, 0.1, seed=0)
    if args.n_finetune:
        train = random_subset(train, args.n_finetune)
    teacher = model if args.distill else None
    kd = " distilled" if args.distill else ""
    if args.prune_speedup:
        t0 = time.perf_counter()
        per_round = finetune_fn(train, args.round_epochs, teacher, args.finetune_lr) if args.round_epochs else None
        cfg = LatencyPruneConfig(speedup=args.prune_speedup, rounds=args.prune_rounds, repeats=args.repeats,
                                 max_step_ratio=args.max_step_ratio, prune=PruneConfig(round_to=args.round_to))
        net, record = prune_to_latency(model, SHAPE, cfg, finetune=per_round)
        if args.finetune_epochs:
            finetune_fn(train, args.finetune_epochs, teacher, args.finetune_lr)(net)
        n = len(record["history"]) - 1
        tag = (f"pruned to 1/{args.prune_speedup:g} latency (measured), {n} round(s)"
               f"{f' x {args.round_epochs} ep' if args.round_epochs else ''} + {args.finetune_epochs} ep{kd} "
               "fine-tune")
        macs = analyze(net, SHAPE).macs
        add(tag, export_onnx(net, SHAPE, tmp / f"{run}-pruned-lat.onnx", dynamic_batch=True), macs,
            time.perf_counter() - t0, {"latency_prune": record})
        q = PostTrainingQuantizer(PTQConfig(calibrator="percentile")).calibrate(net, calib, SHAPE)
        add(tag + " + int8", q.save(tmp / f"{run}-pruned-lat-int8.onnx"), macs, 0.0)
        if args.prune_control:  # the unpruned model trained alike: what the extra epochs alone give
            t0 = time.perf_counter()
            epochs = n * args.round_epochs + args.finetune_epochs
            ref = finetune_fn(train, epochs, teacher, args.finetune_lr)(copy.deepcopy(model))
            add(f"fp32 fine-tuned {epochs} ep{kd} alike (control)",
                export_onnx(ref, SHAPE, tmp / f"{run}-control.onnx", dynamic_batch=True), analyze(ref, SHAPE).macs,
                time.perf_counter() - t0)
    if args.prune_ratio:
        t0 = time.perf_counter()
        ft = finetune_fn(train, args.finetune_epochs, teacher) if args.finetune_epochs else None
        res = StructuredPruner(PruneConfig(ratio=args.prune_ratio, steps=args.prune_steps)).fit(
            model, SHAPE, finetune=ft).result_
        tag = (f"pruned {args.prune_ratio:.0%} L1, {args.prune_steps} step(s) x {args.finetune_epochs} ep{kd} "
               "fine-tune")
        add(tag, export_onnx(res.model, SHAPE, tmp / f"{run}-pruned.onnx", dynamic_batch=True), res.macs_after,
            time.perf_counter() - t0, res.to_dict())
        q = PostTrainingQuantizer(PTQConfig(calibrator="percentile")).calibrate(res.model, calib, SHAPE)
        add(tag + " + int8", q.save(tmp / f"{run}-pruned-int8.onnx"), res.macs_after, 0.0)
    mag = MagnitudePruner(MagnitudeConfig(sparsity=0.5, value_bytes=4)).fit(model)
    add("unstructured 50% magnitude (no fine-tune)",
        export_onnx(mag.model_, SHAPE, tmp / f"{run}-sparse.onnx", dynamic_batch=True), analyze(model, SHAPE).macs,
        0.0, {k: v for k, v in mag.report_.items() if k != "note"})


# Plain convolution stacks (3x3, BN, ReLU) of growing width: how much faster an int8 convolution can be than
# fp32 on this CPU once per-node overheads no longer matter, i.e. the ceiling for any int8 speed-up here.
CEILING_SHAPES = ((16, 32), (64, 32), (128, 16), (256, 16), (512, 8))


def kernel_ceiling(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    """fp32 vs our int8 (U8S8, per-channel) on 5-conv stacks of width c at h×w, timed interleaved."""
    out = []
    for width, size in CEILING_SHAPES:
        torch.manual_seed(0)
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1), nn.ReLU()]
        for _ in range(4):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
        net = nn.Sequential(*layers).eval()
        shape = (3, size, size)
        export_onnx(net, shape, tmp / f"ceiling{width}-fp32.onnx", dynamic_batch=True)
        x = np.random.default_rng(0).random((32, *shape), dtype=np.float32)
        PostTrainingQuantizer(PTQConfig()).calibrate(net, x, shape).save(tmp / f"ceiling{width}-int8.onnx")
        out.append({"width": width, "size": size, "macs": analyze(net, shape).macs})
    time_pairs(out, tmp, args)
    return out


def time_pairs(rows: list[dict[str, Any]], work: Path, args: argparse.Namespace, stem: str = "ceiling") -> None:
    """Time each row's `<stem><width>-fp32.onnx` beside its int8 twin (interleaved) and add the figures to it."""
    for r in rows:
        files = {p: work / f"{stem}{r['width']}-{p}.onnx" for p in ("fp32", "int8")}
        lat = interleaved_latency(files, args.rounds, max(10, args.repeats // 4), (3, r["size"], r["size"]))
        fp, q = lat["fp32"]["median_ms"], lat["int8"]["median_ms"]
        r.update(fp32_ms=fp, int8_ms=q, speedup=lat["int8"]["paired_speedup"], fp32_gmacs_per_s=r["macs"] / fp / 1e6,
                 int8_gmacs_per_s=r["macs"] / q / 1e6)
        print(f"  {stem} c={r['width']} {r['size']}x{r['size']}: x{r['speedup']:.2f}", flush=True)


def width_sweep(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    """fp32 vs our int8 (percentile, per-channel U8S8) of `--width-model` at each of `--widths` (width_mult),
    untrained (BatchNorm statistics settled on calibration images; latency does not depend on weight values),
    each pair timed interleaved: how the int8 speed-up of one zoo design grows with its channel counts."""
    train = D.load_dataset("cifar10", "train", args.data_dir)
    calib_ds = D.calibration_split(train, args.n_calib, seed=0)
    x = D.to_float_tensor(calib_ds, calib_ds.x)
    out = []
    for w in args.widths:
        torch.manual_seed(0)
        net = M.build(ArchSpec(args.width_model, {"width_mult": w, "input_shape": SHAPE}))
        with torch.no_grad():  # settle BN statistics so activations have realistic ranges
            net.train()
            for i in range(0, len(x), 64):
                net(x[i:i + 64])
        net.eval()
        export_onnx(net, SHAPE, tmp / f"width{w}-fp32.onnx", dynamic_batch=True)
        PostTrainingQuantizer(PTQConfig(calibrator="percentile")).calibrate(net, x.numpy(), SHAPE).save(
            tmp / f"width{w}-int8.onnx")
        out.append({"model": args.width_model, "width": w, "size": SHAPE[1], "macs": analyze(net, SHAPE).macs,
                    "params": sum(q.numel() for q in net.parameters())})
    time_pairs(out, tmp, args, stem="width")
    return out


def retime(path: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Re-time a finished result's ONNX files (kept in `work`) with this run's rounds/repeats: for a quieter
    moment than the one the accuracy work ran in. Accuracy, sizes and MACs are kept."""
    result = read_json(path)
    result.update(rounds=args.rounds, repeats=args.repeats, retimed_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    here = machine_info()
    if here["cpu_model"] != result["machine"].get("cpu_model") or here["cpu_flags"] != result["machine"].get(
            "cpu_flags"):  # another machine: keep both descriptions, report the one that timed
        result.update(machine_at_run=result["machine"], machine=here)
    for m in result["models"]:
        time_rows(m["rows"], work, args)
    for key, stem in (("kernel_ceiling", "ceiling"), ("width_sweep", "width")):
        if result.get(key):
            kept = [r for r in result[key] if (work / f"{stem}{r['width']}-int8.onnx").exists()]
            if len(kept) < len(result[key]):
                print(f"  {key}: {len(result[key]) - len(kept)} width(s) not in {work}, left out")
            result[key] = kept
            time_pairs(kept, work, args, stem=stem)
    return result


ONNX_HEADER = ("| variant | test acc. | Δ acc. (pt) | file bytes | weight bytes | weights × smaller | MACs | "
               "int8 kernels | latency ms (p10–p90) | speed-up × |")
QAT_NOTE = ("QAT (LSQ) and mixed precision, simulated in PyTorch (fake quantization; ONNX Runtime has no "
            "sub-8-bit kernels to time):")


def in_order(rows: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Rows in the order they were made (JSON files store keys sorted)."""
    return sorted(rows.items(), key=lambda kv: kv[1].get("order", 0))


def onnx_table(m: dict[str, Any]) -> list[str]:
    lines = [ONNX_HEADER, "|---|" + "---:|" * 9]
    base = m["rows"]["fp32"]["accuracy"]
    for name, r in in_order(m["rows"]):
        lines.append(f"| {name} | {100 * r['accuracy']:.2f}% | {100 * (r['accuracy'] - base):+.2f} | "
                     f"{r['file_bytes']:,} | {r['weight_bytes']:,} | {r['weight_ratio_vs_fp32']:.2f} | "
                     f"{r['macs']:,} | {r['int8_kernels']} | {r['median_ms']:.3f} ({r['p10_ms']:.3f}–"
                     f"{r['p90_ms']:.3f}) | {r['speedup_vs_fp32']:.2f} |")
    return lines


def qat_table(m: dict[str, Any], epochs: int) -> list[str]:
    trained = (f" LSQ rows fine-tuned {epochs} epoch(s), distilled from fp32." if epochs else
               " `--qat-epochs 0`: step sizes initialised from calibration, no training (PTQ-level figures).")
    lines = [QAT_NOTE + trained, "", "| variant | test acc. | Δ acc. (pt) | weight bytes |", "|---|---:|---:|---:|"]
    base = m["qat"]["fp32 (PyTorch)"]["accuracy"]
    for name, r in in_order(m["qat"]):
        lines.append(f"| {name} | {100 * r['accuracy']:.2f}% | {100 * (r['accuracy'] - base):+.2f} | "
                     f"{r['weight_bytes']:,.0f} |")
    return lines


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# Compression benchmark ({'quick smoke run' if result['quick'] else 'full run'})", "",
             f"Machine: {result['machine'].get('cpu_model', '?')}, flags {result['machine'].get('cpu_flags')}; "
             f"ONNX Runtime CPU, 1 thread, batch 1. Latency: median of {result['rounds']} interleaved rounds "
             f"of {result['repeats']} timed runs after 10 warm-ups (p10/p90 over the round medians). "
             f"Accuracy: ONNX Runtime on the test split; calibration: train images only."
             + (f" Latencies re-timed at {result['retimed_at']} (a quiet moment), accuracies from the run."
                if result.get("retimed_at") else "")
             + (f" The ONNX files were made, and their accuracies measured, on another machine "
                f"({result['machine_at_run'].get('cpu_model', '?')}, flags "
                f"{result['machine_at_run'].get('cpu_flags')}); only the latencies are this machine's."
                if result.get("machine_at_run") else ""), ""]
    for m in result["models"]:
        lines += [f"## {m['run']} ({m['n_test']} test images: {m['test_source']}; {m['n_calibration']} "
                  "calibration images)", "", *onnx_table(m), ""]
        if m["qat"]:
            lines += [*qat_table(m, result["args"]["qat_epochs"]), ""]
    names = [n for m in result["models"] for n in (*m["rows"], *m["qat"])]
    if any("w4" in n for n in names):
        lines += ["Weight bytes count w4 rows at 4 bits per weight (packed storage, as an MCU deployment holds "
                  "them); their ONNX files keep the 4-bit values in int8 (no int4 convolution in ONNX Runtime), so "
                  "file bytes and latency equal the int8 rows'.", ""]
    if any(n.startswith("unstructured") for n in names):
        lines += ["Unstructured pruning zeroes weights but the dense runtime still multiplies them: its latency is "
                  "the fp32 model's; only sparse storage (see JSON: sparse_bytes vs dense_bytes) would shrink it.",
                  ""]
    if result.get("kernel_ceiling"):
        lines += ["## int8 vs fp32 convolution ceiling on this CPU", "",
                  "Plain stacks of five 3×3 convolutions (BN, ReLU) of growing width, fp32 vs our int8 (U8S8 "
                  "per-channel QDQ), timed interleaved as above. Wide layers show what an int8 convolution "
                  "can gain here once per-node overheads stop mattering.", "",
                  "| width | input | MACs | fp32 ms | int8 ms | int8 speed-up × | fp32 GMAC/s | int8 GMAC/s |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in result["kernel_ceiling"]:
            lines.append(f"| {r['width']} | {r['size']}×{r['size']} | {r['macs']:,} | {r['fp32_ms']:.3f} | "
                         f"{r['int8_ms']:.3f} | {r['speedup']:.2f} | {r['fp32_gmacs_per_s']:.1f} | "
                         f"{r['int8_gmacs_per_s']:.1f} |")
        lines.append("")
    if result.get("width_sweep"):
        model = result["width_sweep"][0]["model"]
        lines += [f"## int8 vs fp32 by width: `{model}`", "",
                  f"The zoo's `{model}` at each width multiplier, untrained (BatchNorm statistics settled on the "
                  "calibration images; latency does not depend on the weight values), fp32 vs our int8 (percentile, "
                  "U8S8 per-channel QDQ), each pair timed interleaved as above.", "",
                  "| width | MACs | params | fp32 ms | int8 ms | int8 speed-up × | fp32 GMAC/s | int8 GMAC/s |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in result["width_sweep"]:
            lines.append(f"| {r['width']:g} | {r['macs']:,} | {r['params']:,} | {r['fp32_ms']:.3f} | "
                         f"{r['int8_ms']:.3f} | {r['speedup']:.2f} | {r['fp32_gmacs_per_s']:.1f} | "
                         f"{r['int8_gmacs_per_s']:.1f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="full CIFAR-10 copy (default: the bundled subset)")
    p.add_argument("--runs", nargs="*", default=list(RUNS), help="trained runs (none: e.g. only the ceiling)")
    p.add_argument("--quick", action="store_true", help="smoke run: small test/calibration/fine-tune sets")
    p.add_argument("--n-test", type=int, default=0, help="limit the test images (0 = all)")
    p.add_argument("--n-calib", type=int, default=512)
    p.add_argument("--n-finetune", type=int, default=0, help="limit the fine-tune images (0 = all)")
    p.add_argument("--prune-ratio", type=float, default=0.5, help="fixed-ratio pruning row (0 = skip it)")
    p.add_argument("--prune-steps", type=int, default=2)
    p.add_argument("--prune-speedup", type=float, default=2.2,
                   help="latency-driven pruning goal: fp32 latency / this (0 = skip that row)")
    p.add_argument("--round-to", type=int, default=8,
                   help="latency-driven pruning keeps channel counts in multiples of this (8: ONNX Runtime "
                        "on AVX2 runs other counts as slowly as the next multiple of 8; see channel_multiple.py)")
    p.add_argument("--finetune-epochs", type=int, default=5)
    p.add_argument("--finetune-lr", type=float, default=0.01, help="fine-tune learning rate (cosine decay)")
    p.add_argument("--round-epochs", type=int, default=1,
                   help="latency-driven pruning: fine-tune epochs after each round (0 = none)")
    p.add_argument("--max-step-ratio", type=float, default=0.3,
                   help="latency-driven pruning: most channels removed in one round")
    p.add_argument("--prune-control", action="store_true",
                   help="also fine-tune the unpruned model for as many epochs as the latency-pruned one (control)")
    p.add_argument("--prune-rounds", type=int, default=5,
                   help="latency-driven pruning: interleaved timing rounds (pruned vs unpruned) per check")
    p.add_argument("--distill", action="store_true", help="distil from the unpruned model while fine-tuning")
    p.add_argument("--qat-epochs", type=int, default=3, help="LSQ fine-tune epochs (0 = none)")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                   help="which parts to run (default: all); fp32 is always measured")
    p.add_argument("--qat", nargs="+", choices=("w8", "w4", "w2", "mixed"), default=["w8", "w4", "w2", "mixed"],
                   help="LSQ variants of the qat section")
    p.add_argument("--nncf-python", help="python of a venv with nncf installed: adds NNCF's default PTQ")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--repeats", type=int, default=100)
    p.add_argument("--adaround-iters", type=int, default=0, help="AdaRound iterations per layer (0: 300, quick 50)")
    p.add_argument("--no-ceiling", action="store_true", help="skip the int8-vs-fp32 kernel ceiling section")
    p.add_argument("--width-model", default="mobilenet_v2", help="zoo model of the `width` section")
    p.add_argument("--widths", type=float, nargs="+", default=list(WIDTHS),
                   help="width multipliers of the `width` section")
    p.add_argument("--work-dir", help="keep the ONNX files here (default: a temporary folder)")
    p.add_argument("--retime", action="store_true",
                   help="only re-time the files a finished run kept in --work-dir and rewrite its results")
    p.add_argument("--name", default="", help="results file stem (default compression[-quick])")
    p.add_argument("--retime-as", default="",
                   help="with --retime: write the re-timed results under this stem instead of --name's (e.g. the "
                        "same files timed on another CPU)")
    args = p.parse_args()
    if args.quick:
        args.n_test, args.n_calib, args.n_finetune = args.n_test or 500, 128, args.n_finetune or 1000
        args.finetune_epochs, args.rounds, args.repeats, args.prune_steps = 1, 3, 30, 1
        args.qat_epochs, args.prune_speedup = 1, args.prune_speedup and 1.5
    torch.set_num_threads(1)
    stem = args.name or ("compression-quick" if args.quick else "compression")
    if args.retime:
        if not args.work_dir:
            p.error("--retime needs --work-dir: the folder the run kept its ONNX files in")
        result = retime(RESULTS / f"{stem}.json", Path(args.work_dir), args)
        stem = args.retime_as or stem
    else:
        with contextlib.ExitStack() as stack:
            work = (Path(args.work_dir) if args.work_dir else
                    Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="devicefit-bench-"))))
            work.mkdir(parents=True, exist_ok=True)
            models = [bench_model(run, args, work) for run in args.runs]
            ceiling = kernel_ceiling(args, work) if "ceiling" in args.sections and not args.no_ceiling else []
            widths = width_sweep(args, work) if "width" in args.sections else []
        settings = vars(args) | {"nncf_python": nncf_version(args.nncf_python) if args.nncf_python else None}
        result = {"quick": args.quick, "args": settings, "machine": machine_info(), "rounds": args.rounds,
                  "repeats": args.repeats, "models": models, "kernel_ceiling": ceiling, "width_sweep": widths}
    atomic_write_json(RESULTS / f"{stem}.json", result)
    atomic_write_text(RESULTS / f"{stem}.md", markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
