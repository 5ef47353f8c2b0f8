"""Microcontroller deployment of the zoo's MCU-sized models: flash, peak SRAM (our planned arena vs the naive
sum of tensors vs the lower bound), exact instruction counts per inference on Cortex-M4/M7/M55 under QEMU,
and accuracy of the generated C on the whole test split against the integer reference.

    python benchmarks/mcu.py                         # dscnn-fsdd, mobilenet_v2 and resnet8 (CIFAR-10 subset)
    python benchmarks/mcu.py --models resnet8-cifar10-full --n-qemu 2

Needs trained runs in benchmarks/runs/<model>-<data>-<tag>/ (benchmarks/train_baselines.py makes them), gcc,
arm-none-eabi-gcc and qemu-system-arm. Writes benchmarks/results/mcu.{json,md} atomically after each model
(finished models are kept and skipped on a rerun unless --force). Build trees go to --work.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from devicefit import data as D
from devicefit import export as E
from devicefit.core import atomic_write_json, atomic_write_text, machine_info, read_json
from devicefit.hardware import get_target
from devicefit.pipelines._deploy_job import load_trained_run

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DEFAULT_MODELS = ("dscnn-fsdd", "mobilenet_v2-cifar10-subset", "resnet8-cifar10-subset")
CORES = ("cortex-m4", "cortex-m7", "cortex-m55")
TARGET = "cortex-m4-256k"


def _accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    return float((pred.argmax(1) == y).mean())


def _arenas(graph: E.QGraph) -> dict[str, int]:
    ours = E.plan_for_c(graph, "greedy")
    no_in_place = E.plan_for_c(graph, "greedy", in_place=False)
    no_fusion = E.plan_for_c(graph, "greedy", fuse_add=False)
    return {"arena_bytes": ours.arena_bytes, "arena_no_in_place_bytes": no_in_place.arena_bytes,
            "arena_no_fusion_bytes": no_fusion.arena_bytes, "naive_bytes": ours.naive_bytes,
            "lower_bound_bytes": ours.lower_bound_bytes, "unfused_lower_bound_bytes": ours.unfused_lower_bound_bytes,
            "fused_conv_add_ops": sum(op.kind in E.CONV_ADD_KINDS.values() for op in E.fuse_conv_add(graph).ops)}


def _host_checks(graph: E.QGraph, project: E.CProject, c_dir: Path, xq: np.ndarray, n_sanitized: int) -> dict:
    t0 = time.perf_counter()
    ref = E.run_reference(graph, xq).reshape(len(xq), -1)
    t_ref = time.perf_counter() - t0
    fast = E.run_host(E.build_host(c_dir, sanitize=False), xq, project.output_bytes)
    k = min(n_sanitized, len(xq))
    sanitized = E.run_host(E.build_host(c_dir), xq[:k], project.output_bytes)
    return {"ref": ref, "c": fast, "reference_s": t_ref, "host_O2_mismatched_bytes": int((fast != ref).sum()),
            "n_sanitized": k, "host_sanitized_mismatched_bytes": int((sanitized != ref[:k]).sum())}


def bench_model(name: str, work: Path, n_qemu: int, n_sanitized: int, n_test: int | None,
                n_tflm: int) -> dict[str, Any]:
    torch.set_num_threads(1)
    model, train, test, run_cfg = load_trained_run(HERE / "runs" / name)
    calib = D.calibration_split(train, 200)
    graph = E.Int8Converter("minmax").calibrate(model, D.to_float_tensor(calib, calib.x)).graph_
    project = E.generate_c(graph)
    c_dir = project.write(work / name / "c")
    target = get_target(TARGET)
    fit = E.check_memory_fit(c_dir, target.cpu, target.flash_bytes, target.peak_sram_bytes)
    n = len(test) if n_test is None else min(n_test, len(test))
    x = D.to_float_tensor(test, test.x[:n]).numpy()
    y = np.asarray(test.y[:n])
    with torch.no_grad():
        logits = np.concatenate([model(torch.as_tensor(x[i:i + 256])).numpy() for i in range(0, n, 256)])
    xq = E.quantize_input(graph, x)
    host = _host_checks(graph, project, c_dir, xq, n_sanitized)
    qemu = [E.run_on_core(c_dir, core, xq[:n_qemu], host["ref"][:n_qemu]).to_dict() for core in CORES]
    tflm = _tflm(graph, xq[:n_tflm], host["ref"][:n_tflm], work / name)
    return {"model": name, "arch": run_cfg["model"], "data_source": test.source, "n_test": n,
            "ops": len(graph.ops), "macs": graph.macs, "const_bytes": graph.const_bytes, **_arenas(graph),
            "memory_fit": fit.to_dict(), "accuracy_float": _accuracy(logits, y),
            "accuracy_int8_reference": _accuracy(host["ref"], y), "accuracy_c": _accuracy(host["c"], y),
            "top1_agreement_int8_vs_float": float((host["ref"].argmax(1) == logits.argmax(1)).mean()),
            **{k: v for k, v in host.items() if k not in ("ref", "c")}, "qemu": qemu, "tflm": tflm}


def _tflm(graph: E.QGraph, xq: np.ndarray, ref: np.ndarray, folder: Path) -> dict[str, Any]:
    """The same int8 model as .tflite in TFLite Micro's reference kernels: outputs vs ours, and its arena."""
    model = E.tflite_bytes(graph)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.tflite").write_bytes(model)
    out = E.tflm_run(model, xq)
    arena = E.tflm_arena(model, xq[0])
    return {**arena, "tflite_bytes": len(model), "n_inputs": len(xq), "mismatched_bytes": int((out != ref).sum()),
            "max_abs_diff": int(np.abs(out.astype(np.int64) - ref).max())}


def render(results: dict[str, Any]) -> str:
    from devicefit.reports import Column, markdown_table

    rows = []
    for r in results["models"].values():
        counts = {q["core"]: q["instructions_per_inference"] for q in r["qemu"]}
        exact = all(q["bit_exact"] for q in r["qemu"]) and r["host_O2_mismatched_bytes"] == 0 \
            and r["host_sanitized_mismatched_bytes"] == 0
        tflm = r["tflm"]
        rows.append({**r, "tflm_arena": tflm["arena_bytes"], "tflm_head": tflm["head_bytes"],
                     "vs_tflm": r["arena_bytes"] / tflm["arena_bytes"],
                     "tflm_exact": f"{'yes' if tflm['mismatched_bytes'] == 0 else 'NO'} ({tflm['n_inputs']})",
                     "flash": r["memory_fit"]["flash_bytes"], "sram": r["memory_fit"]["sram_bytes"],
                     "ratio": r["arena_bytes"] / r["naive_bytes"], "m4": counts.get("cortex-m4"),
                     "m7": counts.get("cortex-m7"), "m55": counts.get("cortex-m55"), "exact": exact,
                     "acc": f"{100 * r['accuracy_float']:.2f} / {100 * r['accuracy_int8_reference']:.2f} / "
                            f"{100 * r['accuracy_c']:.2f}"})
    kib = lambda v: f"{v / 1024:.1f}"  # noqa: E731
    mins = lambda v: f"{v / 1e6:.2f} M"  # noqa: E731
    cols = [Column("model", "model"), Column("macs", "MACs", mins, "right"), Column("flash", "flash KiB", kib, "right"),
            Column("sram", "SRAM KiB", kib, "right"), Column("arena_bytes", "arena KiB", kib, "right"),
            Column("arena_no_in_place_bytes", "no in-place KiB", kib, "right"),
            Column("arena_no_fusion_bytes", "no conv+add fusion KiB", kib, "right"),
            Column("fused_conv_add_ops", "fused conv+add", str, "right"),
            Column("tflm_arena", "TFLM arena KiB", kib, "right"),
            Column("tflm_head", "TFLM tensors KiB", kib, "right"),
            Column("vs_tflm", "ours / TFLM", lambda v: f"{v:.2f}", "right"),
            Column("naive_bytes", "naive KiB", kib, "right"),
            Column("lower_bound_bytes", "lower bound KiB", kib, "right"),
            Column("unfused_lower_bound_bytes", "unfused lower bound KiB", kib, "right"),
            Column("m4", "M4 instr", mins, "right"), Column("m7", "M7 instr", mins, "right"),
            Column("m55", "M55 instr", mins, "right"), Column("exact", "bit-exact", lambda v: "yes" if v else "NO"),
            Column("tflm_exact", "= TFLM (inputs)"),
            Column("n_test", "test n", str, "right"), Column("acc", "acc % float / int8 ref / C")]
    return "\n".join([
        "# Microcontroller deployment (generated int8 C)", "",
        f"Target budget {TARGET} (256 KiB SRAM, 1 MiB flash). flash = .text + .data of the linked image "
        "(arm-none-eabi-size; code, const weights, startup); SRAM = .data + .bss + 8 KiB stack (arena, "
        "I/O buffers). arena: greedy-by-size plan with in-place reuse, of the graph the C runs, where each conv "
        "(or depthwise conv) directly followed by a residual add whose other operand dies there is one fused "
        "conv+add op writing its output in place into that operand (bit-exact with conv-then-add); no in-place: "
        "the same fused graph without any in-place reuse; no conv+add fusion: the unfused graph with in-place "
        "reuse (the previous plan); naive: every tensor its own bytes; lower bound: most bytes live at one step "
        "in the fused graph (unfused lower bound: in the unfused graph; no plan of the unfused graph can go "
        "below it). Instructions: exact guest instructions per inference inside "
        "the model's code from a QEMU TCG plugin (mean over the QEMU inputs; instruction counts, not time). "
        "Accuracy on the test split; C = the -O2 host build of the generated code; bit-exact = every output "
        "byte equal to the numpy integer reference on the host (-O2 on the whole split, ASan+UBSan on a prefix) "
        "and on all three cores under QEMU.", "",
        markdown_table(rows, cols),
        "TFLM: the same int8 model (unfused: plain CONV_2D + ADD, TFLite has no fused op) written as .tflite "
        "and run in the `tflite-micro` Python package (TFLM "
        "reference kernels, x86-64 host build). TFLM arena = the total its RecordingMicroAllocator reports "
        "after an invoke, confirmed by invoking with exactly that arena_size; TFLM tensors = its arena head "
        "(tensor buffers from its greedy planner); the rest is its "
        "persistent tail (tensor structs with 8-byte host pointers, so larger than on a 32-bit MCU, and "
        "per-channel quantization data that our C keeps in flash). Where torch's padding is not TFLite "
        "SAME/VALID (dscnn's first conv) the .tflite has an explicit PAD op, whose output adds to TFLM's arena. "
        "= TFLM: TFLM outputs equal ours byte for byte on that many test inputs.", "",
        f"Host: {results['machine'].get('cpu_model', '?')}, {results['machine'].get('logical_cpus', '?')} CPUs "
        "(instruction counts and sizes do not depend on it).", ""])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS))
    ap.add_argument("--n-qemu", type=int, default=2, help="test inputs per core under QEMU")
    ap.add_argument("--n-sanitized", type=int, default=50, help="test inputs through the ASan/UBSan build")
    ap.add_argument("--n-tflm", type=int, default=100, help="test inputs run in TFLite Micro for the cross-check")
    ap.add_argument("--n-test", type=int, default=None, help="cap on test inputs (default: the whole split)")
    ap.add_argument("--work", default="/tmp/devicefit-mcu-bench", help="folder for generated projects and builds")
    ap.add_argument("--force", action="store_true", help="rerun models already in results/mcu.json")
    ap.add_argument("--render", action="store_true", help="only rewrite mcu.md from mcu.json")
    args = ap.parse_args()
    path = RESULTS / "mcu.json"
    if args.render:
        atomic_write_text(RESULTS / "mcu.md", render(read_json(path)))
        return
    results = read_json(path) if path.exists() and not args.force else {"models": {}}
    results["machine"] = machine_info()
    for name in args.models.split(","):
        if name in results["models"]:
            print(f"{name}: already in {path}, skipped (use --force)")
            continue
        t0 = time.perf_counter()
        r = bench_model(name, Path(args.work), args.n_qemu, args.n_sanitized, args.n_test, args.n_tflm)
        r["elapsed_s"] = time.perf_counter() - t0
        results["models"][name] = r
        atomic_write_json(path, results)
        atomic_write_text(RESULTS / "mcu.md", render(results))
        print(f"{name}: arena {r['arena_bytes']} B (naive {r['naive_bytes']}, bound {r['lower_bound_bytes']}), "
              f"M4 {r['qemu'][0]['instructions_per_inference']:,.0f} instructions, {r['elapsed_s']:.0f} s")


if __name__ == "__main__":
    main()
