"""How repeatable is one latency figure on host-ort? Measure the same models again and again.

K NAS-Bench-201 networks (seeded, spread over the latency range) are exported once; then P passes
each open a fresh ONNX Runtime session per model (round robin over the models, so a slow spell of the
machine hits all of them alike) and take one figure with the profile protocol (warm-up, timed
repeats). Per model and thread count we report the spread *across passes* of the figure: the
coefficient of variation and the max/min ratio, for several estimators computed from the same raw
samples (median, p25, trimmed mean, min). The goal of the hardware issue: < 3% between passes.

    python benchmarks/host_repeatability.py [--models 8] [--passes 7] [--threads 1 2]

Writes benchmarks/results/host_repeatability.{json,md} atomically.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from devicefit.core import atomic_write_json, atomic_write_text, machine_info
from devicefit.hardware._profile import onnx_model, ort_runner, ort_session, time_runs_ms
from devicefit.nn import export_onnx
from devicefit.reports import Column, markdown_table
from devicefit.space import get_space

RESULTS = Path(__file__).resolve().parent / "results"
INPUT_SHAPE = (3, 32, 32)


def estimators(samples: np.ndarray) -> dict[str, float]:
    """Figures a protocol could quote from one call's timed repeats."""
    s = np.sort(samples)
    cut = len(s) // 10
    return {"median": float(np.median(s)), "p25": float(np.percentile(s, 25)),
            "trimmed_mean": float(s[cut:len(s) - cut].mean()), "min": float(s[0])}


def export_models(k: int, seed: int, tmp: Path) -> list[tuple[str, Path]]:
    """`k` NB201 nets: the space sampled with `seed`, sorted by MACs and taken at evenly spaced ranks."""
    from devicefit.nn import analyze

    space = get_space("nb201")
    rng = np.random.default_rng(seed)
    pool = list(dict.fromkeys(space.sample(rng) for _ in range(20 * k)))
    nets = [(spec, space.build(spec, num_classes=10, input_shape=INPUT_SHAPE)) for spec in pool]
    nets.sort(key=lambda sn: analyze(sn[1], INPUT_SHAPE).macs)
    picks = [nets[i] for i in np.linspace(0, len(nets) - 1, k).round().astype(int)]
    out = []
    for i, (spec, model) in enumerate(picks):
        path = export_onnx(model.eval(), INPUT_SHAPE, tmp / f"m{i}.onnx")
        out.append((spec.spec_id, path))
    return out


def one_figure(path: Path, threads: int, warmup: int, repeats: int) -> np.ndarray:
    with onnx_model(path) as model:
        run = ort_runner(model, ort_session(model, threads))
        return time_runs_ms(run, warmup, repeats)


def spread(values: list[float]) -> dict[str, float]:
    v = np.asarray(values)
    return {"cv": float(v.std(ddof=1) / v.mean()), "max_over_min": float(v.max() / v.min()),
            "median_ms": float(np.median(v))}


def median_of_sessions(figs: dict[str, dict[str, list[float]]], passes: int) -> dict[str, dict[str, float]]:
    """Spread across groups of the median of k sessions' figures (k = 1, 3, 5): what `sessions=k` buys."""
    out = {}
    for k in (1, 3, 5):
        if passes // k < 2:
            continue
        cvs, worst = [], []
        for f in figs.values():
            g = np.median(np.asarray(f["median"])[: passes // k * k].reshape(-1, k), axis=1)
            cvs.append(float(g.std(ddof=1) / g.mean()))
            worst.append(float(g.max() / g.min()))
        out[str(k)] = {"mean_cv": float(np.mean(cvs)), "max_cv": float(np.max(cvs)), "max_over_min": float(max(worst))}
    return out


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    models = export_models(args.models, args.seed, tmp)
    figures: dict[int, dict[str, dict[str, list[float]]]] = {
        t: {sid: {} for sid, _ in models} for t in args.threads}
    within_cv: dict[int, list[float]] = {t: [] for t in args.threads}
    started = time.perf_counter()
    for p in range(args.passes):
        for threads in args.threads:
            for sid, path in models:
                samples = one_figure(path, threads, args.warmup, args.repeats)
                within_cv[threads].append(float(samples.std(ddof=1) / samples.mean()))
                for name, value in estimators(samples).items():
                    figures[threads][sid].setdefault(name, []).append(value)
        print(f"pass {p + 1}/{args.passes} done ({time.perf_counter() - started:.0f} s)", flush=True)
    summary = {}
    for threads in args.threads:
        per_est: dict[str, Any] = {}
        for name in ("median", "p25", "trimmed_mean", "min"):
            spreads = [spread(figures[threads][sid][name]) for sid, _ in models]
            per_est[name] = {"per_model": spreads,
                             "mean_cv": float(np.mean([s["cv"] for s in spreads])),
                             "max_cv": float(np.max([s["cv"] for s in spreads])),
                             "max_over_min_worst": float(np.max([s["max_over_min"] for s in spreads]))}
        summary[str(threads)] = {"estimators": per_est, "within_call_cv_median": float(np.median(within_cv[threads])),
                                 "median_of_sessions": median_of_sessions(figures[threads], args.passes)}
    return {"config": {**vars(args), "out": str(args.out)}, "models": [sid for sid, _ in models], "figures": figures,
            "summary": summary, "wall_seconds": time.perf_counter() - started, "machine": machine_info()}


def markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    rows = []
    for threads, s in result["summary"].items():
        for name, e in s["estimators"].items():
            med = [m["median_ms"] for m in e["per_model"]]
            rows.append({"threads": threads, "estimator": name, "latency": f"{min(med):.3g}–{max(med):.3g} ms",
                         "mean cv": f"{100 * e['mean_cv']:.2f}%", "worst cv": f"{100 * e['max_cv']:.2f}%",
                         "worst max/min": f"{e['max_over_min_worst']:.3f}",
                         "within-call cv": f"{100 * s['within_call_cv_median']:.1f}%"})
    head = (f"# Repeatability of host-ort latency\n\n{len(result['models'])} NAS-Bench-201 nets (C=16, N=5, 32×32, "
            f"batch 1), {cfg['passes']} passes, each a fresh ONNX Runtime session per model with {cfg['warmup']} "
            f"warm-up and {cfg['repeats']} timed runs; spread of the figure *across passes*. Generated by "
            f"`benchmarks/host_repeatability.py` in {result['wall_seconds']:.0f} s.\n\n")
    cols = [Column(k, k, align="left" if k in ("threads", "estimator") else "right") for k in rows[0]]
    rows2 = [{"threads": t, "sessions per figure": k, "mean cv": f"{100 * v['mean_cv']:.2f}%",
              "worst cv": f"{100 * v['max_cv']:.2f}%", "worst max/min": f"{v['max_over_min']:.3f}"}
             for t, s in result["summary"].items() for k, v in s["median_of_sessions"].items()]
    cols2 = [Column(k, k, align="left" if k == "threads" else "right") for k in rows2[0]] if rows2 else []
    tail = ("\nThe figure as the median over k fresh sessions (the passes grouped k at a time), median "
            "estimator:\n\n" + markdown_table(rows2, cols2)) if rows2 else ""
    return head + markdown_table(rows, cols) + tail + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=int, default=8)
    ap.add_argument("--passes", type=int, default=7)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        result = run(args, Path(tmp))
    out = args.out
    atomic_write_json(out / "host_repeatability.json", result)
    atomic_write_text(out / "host_repeatability.md", markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
