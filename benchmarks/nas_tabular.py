"""Constrained NAS on NAS-Bench-201 (CIFAR-10 accuracy) with every measured device latency column: random
search, regularized evolution and HSCoNAS constrained evolution (ours), 100 evaluated architectures per
search, latency limits at the 25/50/75% quantiles of each column, 10 seeds; judged by the gap to the
exhaustive oracle under the same limit and by constraint violations.

    python benchmarks/nas_tabular.py --data-dir ../shared/data      # or $DEVICEFIT_DATA_DIR
    python benchmarks/nas_tabular.py --methods ablation --out benchmarks/results/nas_tabular-ablation

`--methods` takes variant names (see VARIANTS) or `ablation`, which runs HSCoNAS with and without each of
its two ideas (progressive space shrinking; proposing the child that spends the most budget, the idea of
channel scaling inside the search) beside random search and regularized evolution. On an exact objective
the ablation shows what each idea contributes without the proxy noise of a supernet search.

Protocol: accuracy lookups are the budgeted evaluations; latency lookups are free and every method screens
its candidates with them (rejection sampling for random search, rejected children for the evolutions), as in
the HW-NAS-Bench protocol. Accuracy is NATS-Bench's seed-averaged CIFAR-10 test accuracy after 200 epochs (the
only accuracy the tables hold), so search signal and reported figure coincide. Writes
benchmarks/results/nas_tabular.{json,md} atomically.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from devicefit.core import atomic_write_json, atomic_write_text, machine_info
from devicefit.pipelines._search_job import tabular_problem
from devicefit.search import Constraint, SearchConfig, run_search
from devicefit.space import get_space

RESULTS = Path(__file__).resolve().parent / "results"
#: variant name -> (registered strategy, its options). The first three are the default run.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "random": ("random", {}),
    "evolution": ("evolution", {}),
    "hsconas": ("hsconas", {}),
    "hsconas-no-shrink": ("hsconas", {"shrink": False}),
    "hsconas-no-spend": ("hsconas", {"spend_budget": False}),
    "hsconas-neither": ("hsconas", {"shrink": False, "spend_budget": False}),
    # shrinking allowed down to 500 of NB201's 15,625 cells instead of the default floor of 3,000
    "hsconas-shrink500": ("hsconas", {"min_size": 500}),
}
DEFAULT_METHODS = ("random", "evolution", "hsconas")
ABLATION = ("random", "evolution", "hsconas", "hsconas-no-shrink", "hsconas-no-spend", "hsconas-neither",
            "hsconas-shrink500")
QUANTILES = (0.25, 0.50, 0.75)


def run_setting(problem: Any, limit_ms: float, variant: str, seeds: range, n_trials: int) -> dict[str, Any]:
    """Gap to the oracle (points), violations, budget use and (HSCoNAS) final space fraction over seeds for one
    (column, limit, variant)."""
    method, options = VARIANTS[variant]
    _, oracle_acc, _ = problem.oracle(limit_ms)
    constraint = Constraint("latency_ms", limit_ms, lower_bound=problem.min_latency_ms)
    gaps, used, shrunk, violations = [], [], [], 0
    for seed in seeds:
        cfg = SearchConfig(method=method, n_trials=n_trials, seed=seed, constraints=(constraint,), options=options)
        result = run_search(problem.space, problem.objective, cfg, estimate=problem.estimate)
        best = result.best
        if "shrink" in result.strategy:
            shrunk.append(result.strategy["shrink"][-1]["fraction_of_full"])
        if best is None or best.metrics["latency_ms"] > limit_ms:
            violations += 1
            continue
        gaps.append(oracle_acc - best.metrics["accuracy"])
        used.append(best.metrics["latency_ms"] / limit_ms)
    return {"oracle_accuracy": oracle_acc, "gap_mean": float(np.mean(gaps)), "gap_std": float(np.std(gaps)),
            "gap_max": float(np.max(gaps)), "optimum_found": int(sum(g <= 1e-9 for g in gaps)),
            "budget_used": float(np.mean(used)), "violations": violations, "n_seeds": len(seeds),
            "space_fraction": float(np.mean(shrunk)) if shrunk else None}


def run_column(space: Any, column: str, data_dir: str | None, seeds: range, n_trials: int,
               methods: tuple[str, ...]) -> dict[str, Any]:
    problem = tabular_problem(space.name, column, dataset="cifar10", data_dir=data_dir)
    lat = np.array([problem.latency_ms[s] for s in problem.accuracy])
    out: dict[str, Any] = {}
    for q in QUANTILES:
        limit = float(np.quantile(lat, q))
        out[f"q{int(q * 100)}"] = {"limit_ms": limit, **{m: run_setting(problem, limit, m, seeds, n_trials)
                                                        for m in methods}}
    return out


def summary(columns: dict[str, Any], methods: tuple[str, ...]) -> dict[str, Any]:
    """Per variant: mean gap over every (column, limit) with its standard error over settings, worst setting,
    searches that found the optimum, mean budget use, mean final space fraction, total violations."""
    out = {}
    for m in methods:
        rows = [col[q][m] for col in columns.values() for q in col]
        gaps = np.array([r["gap_mean"] for r in rows])
        fractions = [r["space_fraction"] for r in rows if r.get("space_fraction") is not None]
        out[m] = {"gap_mean": float(gaps.mean()),
                  "gap_sem": float(gaps.std(ddof=1) / np.sqrt(len(gaps))) if len(gaps) > 1 else 0.0,
                  "worst_setting_gap": float(gaps.max()),
                  "optimum_found": int(sum(r.get("optimum_found", 0) for r in rows)),
                  "budget_used": float(np.mean([r.get("budget_used", np.nan) for r in rows])),
                  "space_fraction": float(np.mean(fractions)) if fractions else None,
                  "violations": int(sum(r["violations"] for r in rows)), "searches": sum(r["n_seeds"] for r in rows)}
    return out


def paired(columns: dict[str, Any], a: str, b: str) -> dict[str, float]:
    """Setting-by-setting difference of mean gaps, `a` − `b` (points): mean, its standard error, and how many
    settings each side wins. The settings share limits and seeds, so the pairing removes their difficulty."""
    d = np.array([col[q][a]["gap_mean"] - col[q][b]["gap_mean"] for col in columns.values() for q in col])
    return {"mean": float(d.mean()), "sem": float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0,
            "a_better": int((d < 0).sum()), "b_better": int((d > 0).sum()), "settings": len(d)}


PAIRS = (("hsconas", "hsconas-no-shrink"), ("hsconas", "hsconas-no-spend"), ("hsconas-no-spend", "hsconas-neither"),
         ("hsconas-no-shrink", "hsconas-neither"), ("hsconas-shrink500", "hsconas"), ("hsconas-neither", "evolution"),
         ("hsconas", "random"))


def markdown(doc: dict[str, Any]) -> str:
    s, methods = doc["summary"], tuple(doc["methods"])
    lines = [
        "# Constrained NAS on NAS-Bench-201 (CIFAR-10), every measured latency column",
        "",
        f"`{doc['command']}` — {doc['n_trials']} evaluated architectures per search, "
        f"{doc['n_seeds']} seeds, latency limits at the 25/50/75% quantiles of each column; "
        f"{len(doc['columns'])} columns (simulated eyeriss/fpga skipped); wall time {doc['wall_s']:.0f} s. "
        "Gap = oracle accuracy under the limit − accuracy of the best feasible architecture found (points, "
        "mean over seeds; ± the standard error over settings); optimum = searches that found the oracle's "
        "architecture; budget used = the answer's latency / the limit; space left = the fraction of the 15,625 "
        "cells HSCoNAS still samples from at the end; violation = a search whose answer breaks the limit. "
        "Latency lookups are free and used by every method to screen candidates.",
        "",
        "| method | options | mean gap (pts) | worst setting (pts) | optimum found | budget used | space left "
        "| violations / searches |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for m in methods:
        r = s[m]
        opts = ", ".join(f"{k}={v}" for k, v in VARIANTS[m][1].items()) or "defaults"
        frac = "—" if r.get("space_fraction") is None else f"{r['space_fraction']:.2f}"
        lines.append(f"| {m} | {opts} | {r['gap_mean']:.3f} ± {r.get('gap_sem', 0):.3f} | "
                     f"{r['worst_setting_gap']:.3f} | {r.get('optimum_found', '—')} / {r['searches']} | "
                     f"{r.get('budget_used', float('nan')):.3f} | {frac} | {r['violations']} / {r['searches']} |")
    pairs = doc.get("paired", {})
    if pairs:
        lines += ["", "Paired over the settings (same column, limit and seeds): difference of mean gaps, a − b "
                  "(negative: a closer to the oracle), ± its standard error, and settings won by each side.", "",
                  "| a | b | a − b (pts) | a better | b better | settings |", "|---|---|---:|---:|---:|---:|"]
        for key, d in pairs.items():
            a, b = key.split(" vs ")
            lines.append(f"| {a} | {b} | {d['mean']:+.3f} ± {d['sem']:.3f} | {d['a_better']} | {d['b_better']} | "
                         f"{d['settings']} |")
    lines += ["", "Per column and limit (mean gap in points; ± std over seeds):", "",
              "| column | limit | limit (ms) | oracle (%) | " + " | ".join(methods) + " |",
              "|---|---|---:|---:|" + "---:|" * len(methods)]
    for col, res in doc["columns"].items():
        for q, r in res.items():
            cells = " | ".join(f"{r[m]['gap_mean']:.2f} ± {r[m]['gap_std']:.2f}" for m in methods)
            lines.append(f"| {col} | {q} | {r['limit_ms']:.4g} | {r[methods[0]]['oracle_accuracy']:.2f} | {cells} |")
    return "\n".join(lines) + "\n"


def parse_methods(names: list[str]) -> tuple[str, ...]:
    """Variant names from `--methods` (`ablation` expands to the ablation set); unknown ones exit naming the known."""
    out: list[str] = []
    for name in names:
        for m in ABLATION if name == "ablation" else (name,):
            if m not in VARIANTS:
                raise SystemExit(f"--methods: unknown variant {m!r}; known: {', '.join(VARIANTS)} or 'ablation'")
            if m not in out:
                out.append(m)
    return tuple(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("DEVICEFIT_DATA_DIR"))
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--n-trials", type=int, default=100)
    ap.add_argument("--columns", nargs="*", help="latency columns (default: every measured one)")
    ap.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS),
                    help=f"variants to run (default: {' '.join(DEFAULT_METHODS)}); 'ablation' adds HSCoNAS without "
                         "each of its ideas")
    ap.add_argument("--out", type=Path, default=RESULTS / "nas_tabular")
    args = ap.parse_args()
    methods = parse_methods(args.methods)
    space = get_space("nb201")
    table = space.latency_table(data_dir=args.data_dir)
    columns = args.columns or table.measured_columns()
    t0 = time.perf_counter()
    results = {}
    for col in sorted(columns):
        results[col] = run_column(space, col, args.data_dir, range(args.seeds), args.n_trials, methods)
        print(f"{col}: " + ", ".join(f"{q} " + "/".join(f"{r[m]['gap_mean']:.2f}" for m in methods)
                                      for q, r in results[col].items()), flush=True)
    argv = sys.argv[1:]
    shown = [a for i, a in enumerate(argv) if a != "--data-dir" and (i == 0 or argv[i - 1] != "--data-dir")]
    command = "python benchmarks/nas_tabular.py " + " ".join(shown)  # the data directory is a machine path
    source = str(table.source)  # as a path relative to the repository: results carry no machine paths
    source = os.path.relpath(source, RESULTS.parents[1]) if os.path.isabs(source) else source
    doc = {"benchmark": "nas_tabular", "command": command.strip(), "table": source, "n_trials": args.n_trials,
           "n_seeds": args.seeds, "methods": list(methods), "options": {m: VARIANTS[m][1] for m in methods},
           "quantiles": list(QUANTILES), "wall_s": time.perf_counter() - t0, "machine": machine_info(),
           "summary": summary(results, methods),
           "paired": {f"{a} vs {b}": paired(results, a, b) for a, b in PAIRS if a in methods and b in methods},
           "columns": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out.with_suffix(".json"), doc)
    atomic_write_text(args.out.with_suffix(".md"), markdown(doc))
    print(markdown(doc).split("\n\n")[2])


if __name__ == "__main__":
    main()
