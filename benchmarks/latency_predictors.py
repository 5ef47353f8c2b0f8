"""Latency predictors on the measured NB201 / FBNet tables: every registered predictor trained on 10, 20,
100 and 900 random architectures (3 seeds, mean reported) per measured device column, evaluated on a
fixed held-out set of 2,000 other architectures; plus the few-shot study (transfer vs from scratch).

    python benchmarks/latency_predictors.py --data-dir ../shared/data      # or $DEVICEFIT_DATA_DIR

Writes benchmarks/results/latency_predictors.{json,md} atomically; per-column results are kept in a
`.partial.json` beside them so a killed run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from devicefit.core import atomic_write_json, atomic_write_text, machine_info, read_json
from devicefit.hardware._metrics import evaluate_predictions
from devicefit.hardware._predictors import PREDICTORS
from devicefit.hardware._tables import LatencyTable, load_latency_table

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = (10, 20, 100, 900)
SEEDS = (0, 1, 2)
N_TEST = 2000
FAMILIES = ("nb201", "fbnet")
FAST_PARAMS: dict[str, dict[str, Any]] = {"mlp": {"epochs": 200}, "gbdt": {"n_estimators": 150}}
METRICS = ("rmse_ms", "mape", "within_5", "within_10", "spearman", "kendall")


def device_class(meta: dict[str, str]) -> str:
    device = meta.get("device", "")
    if "NVIDIA" in device:
        return "GPU"
    if any(k in device for k in ("Pixel", "Samsung", "Essential")):
        return "phone"
    return "CPU"


def make_predictor(kind: str, table: LatencyTable, column: str) -> Any:
    if kind == "transfer":  # a new device: leave out every setting of the same physical device
        device = table.columns[column].get("device")
        same = [c for c in table.latency_ms if c == column or table.columns[c].get("device") == device]
        return PREDICTORS.get(kind)(source=table, exclude=same)
    return PREDICTORS.get(kind)(**FAST_PARAMS.get(kind, {}))


def split(table: LatencyTable) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(20240).permutation(len(table))
    return perm[:N_TEST], perm[N_TEST:]


def run_column(table: LatencyTable, column: str) -> dict[str, Any]:
    """Mean (over seeds) metrics per predictor and training size for one device column."""
    test, pool = split(table)
    specs = table.specs
    y = table.column(column)
    test_specs = [specs[i] for i in test]
    out: dict[str, Any] = {"class": device_class(table.columns[column]), "device": table.columns[column]}
    for kind in PREDICTORS.names():
        out[kind] = {}
        for n in SIZES:
            runs, seconds = [], 0.0
            for seed in SEEDS:
                train = np.random.default_rng([seed, n]).choice(pool, size=n, replace=False)
                t0 = time.perf_counter()
                model = make_predictor(kind, table, column).fit([specs[i] for i in train], y[train])
                pred = model.predict(test_specs)
                seconds += time.perf_counter() - t0
                runs.append(evaluate_predictions(y[test], pred))
            out[kind][str(n)] = {m: float(np.mean([r[m] for r in runs])) for m in METRICS}
            out[kind][str(n)]["fit_predict_s"] = seconds / len(SEEDS)
    out["noise"] = noise_floor(table, column, test)
    return out


def noise_floor(table: LatencyTable, column: str, test: np.ndarray) -> dict[str, float]:
    """What measurement noise and integer-ms resolution leave for any predictor.

    quantisation: expected share of held-out archs whose error exceeds ±5%/±10% from integer-ms rounding
    alone (true latency uniform within ±0.5 ms of the integer reading), for integer-valued columns.
    NB201 pairs: cells whose nodes 1 and 2 are interchangeable (edge 1→2 is `none`) compute the same
    network; the spread of their latency ratio measures noise (sigma of one reading) and bounds the
    share within ±10% that a perfect predictor of the expected latency could reach.
    """
    y = table.column(column)
    out: dict[str, float] = {}
    if np.allclose(y, np.round(y)):
        lat = y[test]
        out["quant_loss_5"] = float(np.mean(np.maximum(0.0, 1.0 - 0.1 * lat)))
        out["quant_loss_10"] = float(np.mean(np.maximum(0.0, 1.0 - 0.2 * lat)))
    if table.family == "nb201":
        a, b = nb201_symmetric_pairs(table)
        d = np.log(y[a] / y[b])
        sigma = float(d.std() / np.sqrt(2))
        out.update(pair_sigma=sigma, pairs=len(a), pair_within_10=float(np.mean(np.abs(np.exp(d) - 1) <= 0.1)),
                   ceiling_within_10=float(np.mean(np.abs(d) / np.sqrt(2) <= np.log(1.1))))
    return out


def nb201_symmetric_pairs(table: LatencyTable) -> tuple[np.ndarray, np.ndarray]:
    idx = table.encoding.indices(list(table.specs))
    row = {tuple(r): i for i, r in enumerate(idx)}
    a, b = [], []
    for i, r in enumerate(idx):
        twin = row.get((r[1], r[0], r[2], r[3], r[5], r[4]))
        if r[2] == 0 and twin is not None and twin > i:
            a.append(i)
            b.append(twin)
    return np.array(a, dtype=np.int64), np.array(b, dtype=np.int64)


# ------------------------------------------------------------------------------------------ summary


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """Means per device class and the few-shot comparison (transfer vs best from-scratch predictor)."""
    by_class: dict[str, Any] = {}
    for family, cols in results.items():
        for r in cols.values():
            key = f"{family}/{r['class']}"
            for kind in PREDICTORS.names():
                for n in map(str, SIZES):
                    cell = by_class.setdefault(key, {}).setdefault(kind, {}).setdefault(n, {"within_10": [],
                                                                                            "spearman": []})
                    cell["within_10"].append(r[kind][n]["within_10"])
                    cell["spearman"].append(r[kind][n]["spearman"])
            by_class[key]["columns"] = by_class[key].get("columns", 0) + 1
    for cls in by_class.values():
        for kind in PREDICTORS.names():
            for cell in cls[kind].values():
                cell.update({m: float(np.mean(v)) for m, v in cell.items()})
    return {"by_class": by_class, "few_shot": few_shot(results)}


def few_shot(results: dict[str, Any]) -> dict[str, Any]:
    scratch = [k for k in PREDICTORS.names() if k != "transfer"]
    out: dict[str, Any] = {}
    for n in ("10", "20"):
        wins, rows = 0, []
        for family, cols in results.items():
            for col, r in cols.items():
                best = max(scratch, key=lambda k: r[k][n]["spearman"])
                t, s = r["transfer"][n], r[best][n]
                wins += t["spearman"] > s["spearman"]
                rows.append({"column": f"{family}/{col}", "best_scratch": best, "transfer_spearman": t["spearman"],
                             "scratch_spearman": s["spearman"], "transfer_within_10": t["within_10"],
                             "scratch_within_10": s["within_10"]})
        out[n] = {"columns": rows, "transfer_wins_spearman": wins, "n_columns": len(rows),
                  "mean_transfer_spearman": float(np.mean([x["transfer_spearman"] for x in rows])),
                  "mean_scratch_spearman": float(np.mean([x["scratch_spearman"] for x in rows])),
                  "mean_transfer_within_10": float(np.mean([x["transfer_within_10"] for x in rows])),
                  "mean_scratch_within_10": float(np.mean([x["scratch_within_10"] for x in rows]))}
    return out


def markdown(doc: dict[str, Any]) -> str:
    kinds = PREDICTORS.names()
    lines = ["# Latency predictors on measured NAS tables", "",
             f"Held-out: {N_TEST} fixed architectures per space; training sets drawn from the rest; mean of "
             f"{len(SEEDS)} seeds. Cells: share within ±10% / Spearman. Baseline to judge against: `lut` "
             "(per-layer lookup table + bias, the HSCoNAS-style model). Generated by "
             "`benchmarks/latency_predictors.py`.", "", "## Mean per device class", ""]
    lines += ["| space/class | cols | n | " + " | ".join(kinds) + " |", "|---|---|---|" + "---|" * len(kinds)]
    for key, cls in sorted(doc["summary"]["by_class"].items()):
        for n in map(str, SIZES):
            cells = [f"{cls[k][n]['within_10']:.2f} / {cls[k][n]['spearman']:.3f}" for k in kinds]
            lines.append(f"| {key} | {cls['columns']} | {n} | " + " | ".join(cells) + " |")
    lines += ["", "## Few-shot: transfer vs the best from-scratch predictor on the same samples", "",
              "| n | transfer wins (Spearman) | transfer Spearman | scratch Spearman | transfer ±10% | scratch ±10% |",
              "|---|---|---|---|---|---|"]
    for n, f in doc["summary"]["few_shot"].items():
        lines.append(f"| {n} | {f['transfer_wins_spearman']}/{f['n_columns']} | {f['mean_transfer_spearman']:.3f} | "
                     f"{f['mean_scratch_spearman']:.3f} | {f['mean_transfer_within_10']:.2f} | "
                     f"{f['mean_scratch_within_10']:.2f} |")
    lines += ["", "## Per column at 100 training architectures (±10% / Spearman) and the noise floor", "",
              "Noise: `pair σ` = spread of one reading from NB201 cells that compute the same network; `ceiling` = "
              "share within ±10% a perfect predictor could reach under that noise; `quant` = expected share "
              "lost to integer-ms rounding alone at ±10% / ±5%.", "",
              "| column | class | " + " | ".join(kinds) + " | pair σ | ceiling ±10% | quant ±10% / ±5% |",
              "|---|---|" + "---|" * (len(kinds) + 3)]
    for family, cols in doc["results"].items():
        for col, r in cols.items():
            cells = [f"{r[k]['100']['within_10']:.2f} / {r[k]['100']['spearman']:.3f}" for k in kinds]
            nz = r["noise"]
            sig = f"{nz['pair_sigma']:.3f}" if "pair_sigma" in nz else "—"
            ceil = f"{nz['ceiling_within_10']:.2f}" if "ceiling_within_10" in nz else "—"
            q = f"{nz['quant_loss_10']:.3f} / {nz['quant_loss_5']:.3f}" if "quant_loss_10" in nz else "—"
            lines.append(f"| {family}/{col} | {r['class']} | " + " | ".join(cells) + f" | {sig} | {ceil} | {q} |")
    lines += ["", f"Machine: {doc['machine']['cpu_model']}, run time {doc['seconds']:.0f} s.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("DEVICEFIT_DATA_DIR"),
                    help="folder holding nas-hw-benchmarks/ (default $DEVICEFIT_DATA_DIR)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--columns", nargs="*", help="only these columns (for a quick look)")
    args = ap.parse_args()
    if not args.data_dir:
        raise SystemExit("pass --data-dir DIR or set DEVICEFIT_DATA_DIR (the bundled slices are too small)")
    partial_path = args.out / "latency_predictors.partial.json"
    partial = read_json(partial_path) if partial_path.exists() else {}
    start = time.perf_counter() - partial.get("_seconds", 0.0)
    results: dict[str, Any] = {f: partial.get(f, {}) for f in FAMILIES}
    for family in FAMILIES:
        table = load_latency_table(family, args.data_dir)
        for col in table.measured_columns():
            if (args.columns and col not in args.columns) or col in results[family]:
                continue
            t0 = time.perf_counter()
            results[family][col] = run_column(table, col)
            r = results[family][col]
            print(f"{family}/{col:15s} " + "  ".join(f"{k} {r[k]['100']['within_10']:.2f}/{r[k]['100']['spearman']:.3f}"
                                                     for k in PREDICTORS.names())
                  + f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
            atomic_write_json(partial_path, {**results, "_seconds": time.perf_counter() - start})
    doc = {"sizes": SIZES, "seeds": SEEDS, "n_test": N_TEST, "params": FAST_PARAMS, "results": results,
           "seconds": time.perf_counter() - start, "machine": machine_info()}
    doc["summary"] = summarise(results)
    atomic_write_json(args.out / "latency_predictors.json", doc)
    atomic_write_text(args.out / "latency_predictors.md", markdown(doc))
    partial_path.unlink(missing_ok=True)
    print(markdown(doc))


if __name__ == "__main__":
    main()
