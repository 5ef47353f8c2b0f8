"""LightNAS to a latency target stated relative to a reference network and checked side by side: does one
search land within ±5 % of "r × the reference" on a machine whose speed drifts?

    python benchmarks/nas_lightnas_ratio.py            # 3 targets: 10.6 min on 1 thread, idle AVX-512 VM
    python benchmarks/nas_lightnas_ratio.py --quick    # smoke: 1 target, tiny table and data
    python benchmarks/nas_lightnas_ratio.py --load-procs 4   # also re-check the results on a busy machine

Every search is the user-facing job (`devicefit search --method lightnas --latency-ratio r --reference REF`,
`devicefit.pipelines._lightnas_job`): a latency table of `mbconv` at stage width `--width` fitted once on
host-ort (1 thread, batch 1; reused by every target), the reference expressed in the table's units by timing it
beside three of the table's calibration networks, LightNAS (weight-only warm-up, then search) with the
closing loop timing each candidate beside the reference, and the result timed beside the reference in
`--verify-rounds` interleaved rounds. Landing = the result's paired ratio to the reference / r. The absolute
view is reported beside it: the result's measured ms / T, where T = r × the reference's latency at the table's
fit, which is what an absolute target would have been checked against.
`--load-procs N` then re-times every result beside the reference twice, idle and with N busy-loop processes
running, to show what load does to the paired and the absolute check.
Each search's record stays in `<work-dir>/run-<r>.json`; a rerun with the same settings skips finished ones.
Writes benchmarks/results/<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from devicefit.core import atomic_write_json, atomic_write_text, machine_info, read_json
from devicefit.pipelines._lightnas_job import LightNASJobConfig, run_lightnas_job

ROOT = Path(__file__).resolve().parent
TOL = 0.05


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--quick", action="store_true", help="one target, 12-network table, 256 images, 1+1 epochs")
    ap.add_argument("--reference", default="k3_e6@0.75",
                    help="'op@width' of the mbconv space or an .onnx file (default k3_e6@0.75: MobileNetV2 ×0.75 "
                         "in the space's layout)")
    ap.add_argument("--ratios", type=float, nargs="+", default=None, help="targets as multiples of the reference "
                    "(default 0.55 0.7 0.85)")
    ap.add_argument("--width", type=float, default=0.5, help="stage width the search runs at")
    ap.add_argument("--table-archs", type=int, default=None, help="latency table networks (default 60)")
    ap.add_argument("--warmup-epochs", type=int, default=None, help="default 2")
    ap.add_argument("--search-epochs", type=int, default=None, help="default 2")
    ap.add_argument("--n-train", type=int, default=None, help="training images (default 0: the whole bundled set)")
    ap.add_argument("--verify-rounds", type=int, default=9, help="interleaved rounds of the final check")
    ap.add_argument("--no-anchor", action="store_true", help="no closing loop: the table alone steers")
    ap.add_argument("--threads", type=int, default=1, help="torch and ORT threads")
    ap.add_argument("--load-procs", type=int, default=0, help="after the searches, re-check every result beside "
                    "the reference while this many busy-loop processes run (a machine busier than at the table's "
                    "fit): paired ratio vs absolute ms")
    ap.add_argument("--name", default=None, help="results stem (default nas_lightnas_ratio[-quick])")
    ap.add_argument("--work-dir", type=Path, default=None)
    args = ap.parse_args()
    quick = {"ratios": [0.8], "table_archs": 12, "warmup_epochs": 1, "search_epochs": 1, "n_train": 256}
    full = {"ratios": [0.55, 0.7, 0.85], "table_archs": 60, "warmup_epochs": 2, "search_epochs": 2, "n_train": 0}
    for k, v in (quick if args.quick else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.name = args.name or "nas_lightnas_ratio" + ("-quick" if args.quick else "")
    args.work_dir = args.work_dir or ROOT / "runs" / args.name
    return args


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for r in args.ratios:
        cfg = LightNASJobConfig(latency_ms=None, latency_ratio=r, reference=args.reference,
                                work_dir=str(args.work_dir), width=args.width, n_train=args.n_train,
                                warmup_epochs=args.warmup_epochs, search_epochs=args.search_epochs,
                                table_archs=args.table_archs, anchor=not args.no_anchor,
                                verify_rounds=args.verify_rounds, threads=args.threads)
        out = args.work_dir / f"run-{r:g}.json"
        log(f"LightNAS: {r:g} x {args.reference}")
        t0 = time.perf_counter()
        rec = run_lightnas_job(cfg, out, log=log)
        res, table = rec["result"], rec["table"]
        ref_fit = table["reference_ms"]
        rows.append({"ratio": r, "target_ms": res["target"], "reference_ms_table_units": ref_fit,
                     "predicted_over_T": res["cost"] / res["target"],
                     "search_predicted_over_T": res["search_cost"] / res["target"],
                     "measured_ratio": res["measured_ratio"], "measured_over_T": res["measured_over_target"],
                     "within_tol": abs(res["measured_over_target"] - 1) <= TOL,
                     "measured_ms": res["measured_ms"], "reference_measured_ms": res["reference_measured_ms"],
                     "absolute_over_T": res["measured_ms"] / res["target"],
                     "absolute_within_tol": abs(res["measured_ms"] / res["target"] - 1) <= TOL,
                     "machine_speed_vs_fit": res["reference_measured_ms"] / ref_fit,
                     "repairs": len(res["repairs"]), "measurements": len(res["measurements"]),
                     "closing_over_T": [m["measured"] / res["target"] for m in res["measurements"]],
                     "search_s": res["search_s"], "call_s": time.perf_counter() - t0,
                     "ops": res["spec"]["params"]["ops"], "record": out.name, "holdout": table["holdout"],
                     "range_ms": table["range_ms"]})
    return rows


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    x = 0
    while time.perf_counter() < end:
        x += 1


def recheck_under_load(args: argparse.Namespace, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Time every result beside the reference again, once idle and once with `--load-procs` busy loops running."""
    import multiprocessing as mp

    from devicefit.search import LatencyTable, ReferenceLatency

    out = []
    table = LatencyTable.load(next(args.work_dir.glob("latency_table-*.json")))
    ref = next(args.work_dir.glob("reference-*.onnx"))
    for row in rows:
        rec = read_json(args.work_dir / row["record"])
        model = args.work_dir / rec["result"]["model_dir"] / "model.onnx"
        entry: dict[str, Any] = {"ratio": row["ratio"], "target_ms": row["target_ms"]}
        for phase, n in (("idle", 0), ("loaded", args.load_procs)):
            procs = [mp.Process(target=_spin, args=(600.0,), daemon=True) for _ in range(n)]
            for p in procs:
                p.start()
            try:
                timer = ReferenceLatency(table, ref, rounds=args.verify_rounds, seed=1)
                paired = timer.ratio(model)
                ms = timer.records_[-1]["candidate_ms"]
            finally:
                for p in procs:
                    p.terminate()
                    p.join()
            entry[phase] = {"paired_over_T": paired / row["ratio"], "absolute_over_T": ms / row["target_ms"],
                            "candidate_ms": ms, "reference_ms": timer.records_[-1]["reference_now_ms"],
                            "rounds_ms": timer.records_[-1]["rounds_ms"]}
            log(f"re-check {row['ratio']:g} {phase} ({n} busy loops): paired/T {paired / row['ratio']:.3f}, "
                f"absolute/T {ms / row['target_ms']:.3f}")
        out.append(entry)
    return out


def markdown(doc: dict[str, Any]) -> str:
    s, rows = doc["settings"], doc["rows"]
    h = rows[0]["holdout"]
    lo, hi = rows[0]["range_ms"]
    hits = sum(r["within_tol"] for r in rows)
    abs_hits = sum(r["absolute_within_tol"] for r in rows)
    lines = [
        f"# LightNAS to a target relative to {s['reference']}, checked side by side ({doc['benchmark']})", "",
        f"`mbconv` at stage width {s['width']}, CIFAR-10 (bundled subset, {s['n_train'] or 'all'} training "
        f"images), host-ort fp32, batch 1, {s['threads']} thread(s). Latency table: {s['table_archs']} + 2 networks, "
        f"held-out mean error {100 * h.get('mean_rel_error', float('nan')):.1f} % (n = {h.get('n', 0)}), range "
        f"{lo:.3f}–{hi:.3f} ms. Search: {s['warmup_epochs']} warm-up + {s['search_epochs']} search epochs per target, "
        f"{'closing loop beside the reference' if not s['no_anchor'] else 'no closing loop'}; result timed beside "
        f"the reference in {s['verify_rounds']} interleaved rounds. Wall time {doc['wall_s'] / 60:.1f} min.", "",
        f"**{hits} of {len(rows)}** land within ±{TOL:.0%} of r × the reference (paired). The absolute view, "
        f"measured ms / T with T fixed at the table's fit: {abs_hits} of {len(rows)}.", "",
        "| r | T (table ms) | predicted/T | closing loop measured/T | **paired ratio / r** | within ±5 % | "
        "measured ms / T (absolute) | reference now / at fit | repairs | search s |",
        "|---:|---:|---:|---|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        loop = ", ".join(f"{v:.3f}" for v in r["closing_over_T"]) or "–"
        lines.append(f"| {r['ratio']:g} | {r['target_ms']:.3f} | {r['predicted_over_T']:.3f} | {loop} | "
                     f"**{r['measured_over_T']:.3f}** | {'yes' if r['within_tol'] else 'no'} | "
                     f"{r['absolute_over_T']:.3f} | {r['machine_speed_vs_fit']:.3f} | {r['repairs']} | "
                     f"{r['search_s']:.0f} |")
    lines += ["", "*reference now / at fit*: the reference's measured ms in the final check over its latency in "
              "the table's units (how far the machine's speed moved since the table was fitted).",
              "", "Searched ops per layer:", ""]
    lines += [f"- r = {r['ratio']:g}: {' '.join(r['ops'])}" for r in rows]
    if doc.get("recheck"):
        lines += ["", f"Re-check of every result beside the reference, idle and with {s['load_procs']} busy-loop "
                  f"processes running on the {doc['machine'].get('logical_cpus', '?')} logical CPUs "
                  f"({s['verify_rounds']} interleaved rounds each):", "",
                  "| r | idle: paired/T | idle: absolute/T | loaded: paired/T | loaded: absolute/T | "
                  "loaded: reference ms |", "|---:|---:|---:|---:|---:|---:|"]
        for e in doc["recheck"]:
            i, ld = e["idle"], e["loaded"]
            lines.append(f"| {e['ratio']:g} | {i['paired_over_T']:.3f} | {i['absolute_over_T']:.3f} | "
                         f"**{ld['paired_over_T']:.3f}** | {ld['absolute_over_T']:.3f} | {ld['reference_ms']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse()
    os.environ.pop("DEVICEFIT_DATA_DIR", None)  # the bundled subset, as documented
    t0 = time.perf_counter()
    rows = run(args)
    wall = time.perf_counter() - t0
    recheck = recheck_under_load(args, rows) if args.load_procs else None
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    settings["work_dir"] = args.work_dir.name
    prev = ROOT / "results" / f"{args.name}.json"
    if prev.exists() and wall < 60:  # every search was reused: keep the wall time of the run that made them
        wall = read_json(prev).get("wall_s", wall)
    doc = {"benchmark": args.name, "settings": settings, "tolerance": TOL, "rows": rows, "recheck": recheck,
           "wall_s": wall,
           "machine": machine_info()}
    out = ROOT / "results" / args.name
    atomic_write_json(out.with_suffix(".json"), doc)
    atomic_write_text(out.with_suffix(".md"), markdown(doc))
    print(markdown(doc))


if __name__ == "__main__":
    main()
