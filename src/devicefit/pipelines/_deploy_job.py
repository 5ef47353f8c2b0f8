"""The deploy job: a trained run directory + an MCU target → int8 C project, memory fit, verification
(host build with sanitizers on the whole test split, QEMU runs on the target's core) and a JSON/Markdown
report (`deploy.json`, `deploy.md`) in the output folder."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from devicefit.core import (
    ArchSpec,
    ConfigError,
    atomic_write_json,
    atomic_write_text,
    check_positive,
    machine_info,
    read_json,
    to_dict,
)

__all__ = ["DeployJobConfig", "load_trained_run", "render_deploy_markdown", "run_deploy_job"]


@dataclass(frozen=True)
class DeployJobConfig:
    """`source`: a `devicefit train` run directory. `target`: an MCU target name. `cores`: QEMU cores to
    verify on (empty → the target's `cpu`). `n_calibration` train examples calibrate activation ranges;
    `n_qemu` test inputs run under QEMU per core (`qemu` False: no QEMU run); `n_test` caps the host-verified
    test examples (None: all)."""

    source: str
    target: str = "cortex-m4-256k"
    out: str = "deploy"
    cores: tuple[str, ...] = ()
    planner: str = "greedy"
    range_estimator: str = "minmax"
    n_calibration: int = 200
    n_qemu: int = 4
    n_test: int | None = None
    data_dir: str | None = None
    qemu: bool = True

    def __post_init__(self) -> None:
        check_positive("n_calibration", self.n_calibration)
        check_positive("n_qemu", self.n_qemu)
        if self.n_test is not None:
            check_positive("n_test", self.n_test)


def load_trained_run(run_dir: str | Path, data_dir: str | None = None) -> tuple[Any, Any, Any, dict[str, Any]]:
    """(model in eval mode, train split, test split, run config) of a finished train run directory."""
    from devicefit import data as D
    from devicefit import models as M
    from devicefit import train as T

    root = Path(run_dir)
    if root.suffix == ".onnx":
        raise ConfigError(f"{root}: ONNX input is not supported yet; pass a `devicefit train` run directory "
                          "(config.json, spec.json, model.pt)")
    for name in ("config.json", "spec.json", "model.pt"):
        if not (root / name).exists():
            raise ConfigError(f"{root} is not a finished train run: {name} is missing")
    cfg = read_json(root / "config.json")["config"]
    model = M.build(ArchSpec.from_dict(read_json(root / "spec.json")))
    T.load_weights(model, root / "model.pt").eval()
    d = cfg["data"]
    train = D.load_dataset(d["name"], "train", data_dir or d.get("data_dir"), **d.get("options", {}))
    test = D.load_dataset(d["name"], "test", data_dir or d.get("data_dir"), **d.get("options", {}))
    return model, train, test, cfg


def _float_logits(model: Any, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return np.concatenate([model(torch.as_tensor(x[i:i + 256])).numpy() for i in range(0, len(x), 256)])


def run_deploy_job(cfg: DeployJobConfig, *, echo: Callable[[str], None] | None = None,
                   target_budgets: Any = None) -> dict[str, Any]:
    """Convert, generate, check the memory budget, verify; write the C project and the report to `cfg.out`.
    `target_budgets`: a `Target` whose budgets replace those of `cfg.target` (a recipe's overrides)."""
    from devicefit import data as D
    from devicefit import export as E
    from devicefit.hardware import get_target

    say = echo or (lambda s: None)
    target = target_budgets if target_budgets is not None else get_target(cfg.target)
    if target.kind != "mcu" or target.cpu is None:
        raise ConfigError(f"target must be a microcontroller target (kind 'mcu'), got {target.name!r} ({target.kind})")
    t0 = time.perf_counter()
    model, train, test, run_cfg = load_trained_run(cfg.source, cfg.data_dir)
    calib = D.calibration_split(train, min(cfg.n_calibration, len(train)))
    graph = E.Int8Converter(cfg.range_estimator).calibrate(model, D.to_float_tensor(calib, calib.x)).graph_
    say(f"converted {len(graph.ops)} int8 ops, {graph.macs:,} MACs, {graph.const_bytes:,} B of constants")
    out = Path(cfg.out)
    project = E.generate_c(graph, planner=cfg.planner)
    project.write(out / "c")
    fit = E.check_memory_fit(out / "c", target.cpu, target.flash_bytes or 1 << 30, target.peak_sram_bytes or 1 << 30)
    say(f"flash {fit.flash_bytes:,} B of {fit.flash_budget_bytes:,}, SRAM {fit.sram_bytes:,} B of "
        f"{fit.sram_budget_bytes:,}: {'fits' if fit.fits else 'DOES NOT FIT'}")
    verification = _verify(E, model, graph, project, test, cfg, out, target.cpu, say)
    report = {
        "kind": "deploy", "source": str(cfg.source), "target": target.to_dict(), "config": to_dict(cfg),
        "model": run_cfg["model"], "data_source": test.source, "ops": len(graph.ops), "macs": graph.macs,
        "const_bytes": graph.const_bytes, "arena": project.plan.to_dict(), "memory_fit": fit.to_dict(),
        "verification": verification, "machine": machine_info(), "elapsed_s": time.perf_counter() - t0,
    }
    atomic_write_json(out / "deploy.json", report)
    atomic_write_text(out / "deploy.md", render_deploy_markdown(report))
    return report


def _verify(E: Any, model: Any, graph: Any, project: Any, test: Any, cfg: DeployJobConfig, out: Path,
            cpu: str, say: Callable[[str], None]) -> dict[str, Any]:
    from devicefit import data as D

    n = len(test) if cfg.n_test is None else min(cfg.n_test, len(test))
    x = D.to_float_tensor(test, test.x[:n]).numpy()
    y = np.asarray(test.y[:n])
    xq = E.quantize_input(graph, x)
    ref = E.run_reference(graph, xq).reshape(n, -1)
    host = E.run_host(E.build_host(out / "c"), xq, project.output_bytes)
    host_mismatch = int((host != ref).sum())
    say(f"host gcc (ASan+UBSan) on {n} test inputs: {host_mismatch} output bytes differ from the reference")
    result = {"n_test": n, "host_sanitized_mismatched_bytes": host_mismatch, "host_bit_exact": host_mismatch == 0,
              "accuracy_float": float((_float_logits(model, x).argmax(1) == y).mean()),
              "accuracy_int8_reference": float((ref.argmax(1) == y).mean()),
              "accuracy_c_host": float((host.argmax(1) == y).mean()), "qemu": []}
    for core in (cfg.cores or (cpu,)) if cfg.qemu else ():
        k = min(cfg.n_qemu, n)
        run = E.run_on_core(out / "c", core, xq[:k], ref[:k])
        say(f"{core} under QEMU {run.qemu_machine}: {run.mismatches} mismatched bytes on {k} inputs, "
            f"{run.instructions_per_inference:,.0f} instructions per inference")
        result["qemu"].append(run.to_dict())
    result["tflm"] = _tflm_check(E, graph, xq[:min(cfg.n_qemu * 8, n)], ref, out, say)
    return result


def _tflm_check(E: Any, graph: Any, xq: np.ndarray, ref: np.ndarray, out: Path,
                say: Callable[[str], None]) -> dict[str, Any]:
    """Write model.tflite and run it in TFLite Micro (when tflite, flatbuffers and tflite-micro are installed)."""
    from devicefit.core import DevicefitError

    try:
        model = E.tflite_bytes(graph)
        got = E.tflm_run(model, xq)
        arena = E.tflm_arena(model, xq[0])
    except DevicefitError as e:  # optional packages missing, or an op .tflite cannot express
        say(f"TFLite Micro cross-check skipped: {e}")
        return {"skipped": str(e)}
    (out / "model.tflite").write_bytes(model)
    mismatched = int((got != ref[:len(xq)]).sum())
    say(f"TFLite Micro on {len(xq)} inputs: {mismatched} output bytes differ; its arena {arena['arena_bytes']:,} B")
    return {**arena, "n_inputs": len(xq), "mismatched_bytes": mismatched, "tflite_bytes": len(model)}


def render_deploy_markdown(report: dict[str, Any]) -> str:
    """The deploy report as Markdown: memory fit, arena plan, verification and instruction counts."""
    from devicefit.reports import Column, format_bytes, markdown_table

    fit, arena, ver = report["memory_fit"], report["arena"], report["verification"]
    status = "fits" if fit["fits"] else (f"does NOT fit: {fit['missing_flash_bytes']:,} B flash and "
                                         f"{fit['missing_sram_bytes']:,} B SRAM missing")
    mem_rows = [{"what": "flash (code + const weights)", "used": fit["flash_bytes"],
                 "budget": fit["flash_budget_bytes"]},
                {"what": "SRAM (arena + I/O + stack)", "used": fit["sram_bytes"], "budget": fit["sram_budget_bytes"]},
                {"what": f"arena, planner '{arena['planner']}'", "used": arena["arena_bytes"], "budget": None},
                {"what": "arena, naive sum of tensors", "used": arena["naive_bytes"], "budget": None},
                {"what": "arena lower bound (max live bytes)", "used": arena["lower_bound_bytes"], "budget": None}]
    tflm = ver.get("tflm", {})
    if "arena_bytes" in tflm:
        mem_rows.append({"what": "TFLite Micro arena, same .tflite (x86-64 host build)", "used": tflm["arena_bytes"],
                         "budget": None})
    cols = [Column("what", "memory"), Column("used", "bytes", lambda v: f"{v:,} ({format_bytes(v)})", "right"),
            Column("budget", "budget", lambda v: f"{v:,}", "right")]
    qemu_cols = [Column("core", "core"), Column("qemu_machine", "QEMU board"),
                 Column("n_inputs", "inputs", str, "right"),
                 Column("bit_exact", "bit-exact", lambda v: "yes" if v else "NO"),
                 Column("instructions_per_inference", "instructions / inference", lambda v: f"{v:,.0f}", "right")]
    return "\n".join([
        f"# Deploy report: {report['model'].get('name')} → {report['target']['name']}", "",
        f"{report['ops']} int8 ops, {report['macs']:,} MACs, {report['const_bytes']:,} B of constants. "
        f"Memory: **{status}** (linked with arm-none-eabi-gcc, regions set to the target's budget).", "",
        markdown_table(mem_rows, cols),
        f"Verification on {ver['n_test']} test inputs ({report['data_source']}): host gcc build with "
        f"AddressSanitizer + UBSan is {'bit-exact' if ver['host_bit_exact'] else 'NOT bit-exact'} with the integer "
        f"reference; accuracy float {100 * ver['accuracy_float']:.2f}%, int8 reference "
        f"{100 * ver['accuracy_int8_reference']:.2f}%, generated C {100 * ver['accuracy_c_host']:.2f}%.", "",
        markdown_table(ver["qemu"], qemu_cols),
        _tflm_line(tflm), "",
        "Instruction counts are exact guest instruction counts from a QEMU TCG plugin over the model's code, "
        "not cycles or time (QEMU models no pipeline, caches or wait states).", ""])


def _tflm_line(tflm: dict[str, Any]) -> str:
    if "skipped" in tflm:
        return f"TFLite Micro cross-check skipped: {tflm['skipped']}"
    same = "equal to ours byte for byte" if tflm["mismatched_bytes"] == 0 else \
        f"DIFFERENT from ours in {tflm['mismatched_bytes']} bytes"
    return (f"TFLite Micro (tflite-micro reference kernels) on {tflm['n_inputs']} inputs of model.tflite: outputs "
            f"{same}; TFLM arena {tflm['arena_bytes']:,} B ({tflm['head_bytes']:,} B tensors + "
            f"{tflm['tail_bytes']:,} B persistent, 8-byte host pointers).")
