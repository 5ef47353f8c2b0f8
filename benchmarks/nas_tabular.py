"""Constrained NAS on NAS-Bench-201 (CIFAR-10 accuracy) with every measured device latency column: random
search, regularized evolution and HSCoNAS constrained evolution (ours), 100 evaluated architectures per
search, latency limits at the 25/50/75% quantiles of each column, 10 seeds; judged by the gap to the
exhaustive oracle under the same limit and by constraint violations.

    python benchmarks/nas_tabular.py --data-dir ../shared/data      # or $DEVICEFIT_DATA_DIR

Protocol: accuracy lookups are the budgeted evaluations; latency lookups are free and every method screens
its candidates with them (rejection sampling for random search, rejected children for the evolutions), as in
the HW-NAS-Bench protocol. Accuracy is NATS-Bench's seed-averaged CIFAR-10 test accuracy after 200 epochs (the
only accuracy the tables hold), so search signal and reported figure coincide. Writes
benchmarks/results/nas_tabular.{json,md} atomically.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from devicefit.core import atomic_write_json, atomic_write_text, machine_info
from devicefit.pipelines._search_job import tabular_problem
from devicefit.search import Constraint, SearchConfig, run_search
from devicefit.space import get_space

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("random", "evolution", "hsconas")
QUANTILES = (0.25, 0.50, 0.75)


def run_setting(problem: Any, limit_ms: float, method: str, seeds: range, n_trials: int) -> dict[str, Any]:
    """Gap to the oracle (points) and violations over seeds for one (column, limit, method)."""
    _, oracle_acc, _ = problem.oracle(limit_ms)
    constraint = Constraint("latency_ms", limit_ms, lower_bound=problem.min_latency_ms)
    gaps, violations = [], 0
    for seed in seeds:
        cfg = SearchConfig(method=method, n_trials=n_trials, seed=seed, constraints=(constraint,))
        best = run_search(problem.space, problem.objective, cfg, estimate=problem.estimate).best
        if best is None or best.metrics["latency_ms"] > limit_ms:
            violations += 1
            continue
        gaps.append(oracle_acc - best.metrics["accuracy"])
    return {"oracle_accuracy": oracle_acc, "gap_mean": float(np.mean(gaps)), "gap_std": float(np.std(gaps)),
            "gap_max": float(np.max(gaps)), "violations": violations, "n_seeds": len(seeds)}


def run_column(space: Any, column: str, data_dir: str | None, seeds: range, n_trials: int) -> dict[str, Any]:
    problem = tabular_problem(space.name, column, dataset="cifar10", data_dir=data_dir)
    lat = np.array([problem.latency_ms[s] for s in problem.accuracy])
    out: dict[str, Any] = {}
    for q in QUANTILES:
        limit = float(np.quantile(lat, q))
        out[f"q{int(q * 100)}"] = {"limit_ms": limit, **{m: run_setting(problem, limit, m, seeds, n_trials)
                                                        for m in METHODS}}
    return out


def summary(columns: dict[str, Any]) -> dict[str, Any]:
    """Per method: mean gap over every (column, limit), worst setting, total violations."""
    out = {}
    for m in METHODS:
        rows = [col[q][m] for col in columns.values() for q in col]
        out[m] = {"gap_mean": float(np.mean([r["gap_mean"] for r in rows])),
                  "worst_setting_gap": float(np.max([r["gap_mean"] for r in rows])),
                  "violations": int(sum(r["violations"] for r in rows)), "searches": sum(r["n_seeds"] for r in rows)}
    return out


def markdown(doc: dict[str, Any]) -> str:
    s = doc["summary"]
    lines = [
        "# Constrained NAS on NAS-Bench-201 (CIFAR-10), every measured latency column",
        "",
        f"`python benchmarks/nas_tabular.py` — {doc['n_trials']} evaluated architectures per search, "
        f"{doc['n_seeds']} seeds, latency limits at the 25/50/75% quantiles of each column; "
        f"{len(doc['columns'])} columns (simulated eyeriss/fpga skipped); wall time {doc['wall_s']:.0f} s. "
        "Gap = oracle accuracy under the limit − accuracy of the best feasible architecture found (points, "
        "mean over seeds); violation = a search whose answer breaks the limit. Latency lookups are free and "
        "used by every method to screen candidates.",
        "",
        "| method | mean gap (pts) | worst setting (pts) | violations / searches |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {m} | {s[m]['gap_mean']:.3f} | {s[m]['worst_setting_gap']:.3f} | "
              f"{s[m]['violations']} / {s[m]['searches']} |" for m in METHODS]
    lines += ["", "Per column and limit (mean gap in points; ± std over seeds):", "",
              "| column | limit | limit (ms) | oracle (%) | " + " | ".join(METHODS) + " |",
              "|---|---|---:|---:|" + "---:|" * len(METHODS)]
    for col, res in doc["columns"].items():
        for q, r in res.items():
            cells = " | ".join(f"{r[m]['gap_mean']:.2f} ± {r[m]['gap_std']:.2f}" for m in METHODS)
            lines.append(f"| {col} | {q} | {r['limit_ms']:.4g} | {r['random']['oracle_accuracy']:.2f} | {cells} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("DEVICEFIT_DATA_DIR"))
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--n-trials", type=int, default=100)
    ap.add_argument("--columns", nargs="*", help="latency columns (default: every measured one)")
    ap.add_argument("--out", type=Path, default=RESULTS / "nas_tabular")
    args = ap.parse_args()
    space = get_space("nb201")
    table = space.latency_table(data_dir=args.data_dir)
    columns = args.columns or table.measured_columns()
    t0 = time.perf_counter()
    results = {}
    for col in sorted(columns):
        results[col] = run_column(space, col, args.data_dir, range(args.seeds), args.n_trials)
        print(f"{col}: " + ", ".join(f"{q} " + "/".join(f"{r[m]['gap_mean']:.2f}" for m in METHODS)
                                      for q, r in results[col].items()), flush=True)
    doc = {"benchmark": "nas_tabular", "table": table.source, "n_trials": args.n_trials, "n_seeds": args.seeds,
           "methods": list(METHODS), "quantiles": list(QUANTILES), "wall_s": time.perf_counter() - t0,
           "machine": machine_info(), "summary": summary(results), "columns": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out.with_suffix(".json"), doc)
    atomic_write_text(args.out.with_suffix(".md"), markdown(doc))
    print(markdown(doc).split("\n\n")[2])


if __name__ == "__main__":
    main()
