"""Which channel counts does the runtime like? Latency of a stack of three 3×3 convolutions (C → C channels, each
with ReLU) for every C in a range, timed side by side on host-ort, fp32 and batch 1.

Structured pruning rounds channel counts to a multiple (`PruneConfig.round_to`) because runtimes block channels
(ONNX Runtime's NCHWc layout uses blocks of 8 floats with AVX2 and 16 with AVX-512). A count off the block
can cost more than the channels it removed. This script measures that staircase on the machine it runs on:
every width is timed in the same interleaved rounds (`measure_interleaved`), so drift does not tilt the curve.

    python benchmarks/channel_multiple.py                       # C = 8 … 40 at 32×32 and 16×16 (~30 s)
    python benchmarks/channel_multiple.py --channels 8 72 --sizes 16

Writes benchmarks/results/<name>.{json,md} atomically, with the machine (CPU model and flags) it ran on.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from devicefit.core import atomic_write_json, atomic_write_text, machine_info
from devicefit.hardware import measure_interleaved
from devicefit.nn import export_onnx

RESULTS = Path(__file__).resolve().parent / "results"
LAYERS = 3


def conv_model(c: int) -> nn.Module:
    """`LAYERS` 3×3 convolutions C → C with ReLU: a stack, so layout changes between layers count too."""
    torch.manual_seed(0)
    return nn.Sequential(*[m for _ in range(LAYERS) for m in (nn.Conv2d(c, c, 3, padding=1), nn.ReLU())]).eval()


def sweep(channels: list[int], size: int, rounds: int, repeats: int, tmp: Path) -> list[dict[str, Any]]:
    """Every width at `size`×`size`, timed in the same interleaved rounds: median ms and ms per MMAC."""
    files = {}
    for c in channels:
        files[str(c)] = export_onnx(conv_model(c), (c, size, size), tmp / f"c{c}-{size}.onnx", dynamic_batch=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # spread is reported per row instead
        m = measure_interleaved(files, "host-ort", rounds=rounds, repeats=repeats, threads=1)
    rows = []
    for c in channels:
        macs = LAYERS * c * c * 9 * size * size
        ms = m.median_ms(str(c))
        r = np.asarray(m.rounds_ms[str(c)])
        rows.append({"channels": c, "size": size, "macs": macs, "median_ms": ms,
                     "p10_ms": float(np.percentile(r, 10)), "p90_ms": float(np.percentile(r, 90)),
                     "ns_per_mac": 1e6 * ms / macs})
    for i, row in enumerate(rows):
        row["slower_than_a_wider_width"] = any(o["median_ms"] < row["median_ms"] for o in rows[i + 1:])
    return rows


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [f"# Latency by channel count ({result['name']})", "",
             f"Machine: {m.get('cpu_model', '?')}, flags {m.get('cpu_flags')}; ONNX Runtime "
             f"{result['runtime_version']}, 1 thread, batch 1, fp32. Three 3×3 convolutions C → C (+ ReLU), "
             "every C timed in the same "
             f"{result['rounds']} interleaved rounds of {result['repeats']} runs (median of round medians). "
             "*slower than a wider width*: some larger C in the sweep measured faster.", ""]
    for size, rows in result["sweeps"].items():
        lines += [f"## {size}×{size} input", "",
                  "| C | latency ms (p10–p90) | ns per MAC | slower than a wider width |", "|---:|---:|---:|---|"]
        for r in rows:
            lines.append(f"| {r['channels']} | {r['median_ms']:.4f} ({r['p10_ms']:.4f}–{r['p90_ms']:.4f}) | "
                         f"{r['ns_per_mac']:.4f} | {'yes' if r['slower_than_a_wider_width'] else ''} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, nargs=2, default=[8, 40], metavar=("LOW", "HIGH"),
                    help="sweep C from LOW to HIGH inclusive")
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 16], help="input height = width")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--name", default="channel-multiple", help="results file stem")
    args = ap.parse_args()
    lo, hi = args.channels
    if not 1 <= lo <= hi:
        raise SystemExit(f"--channels expects 1 <= LOW <= HIGH, got {lo} {hi}")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="devicefit-chan-") as tmp:
        sweeps = {str(s): sweep(list(range(lo, hi + 1)), s, args.rounds, args.repeats, Path(tmp))
                  for s in args.sizes}
    result = {"name": args.name, "rounds": args.rounds, "repeats": args.repeats, "machine": machine_info(),
              "runtime_version": ort.__version__, "sweeps": sweeps}
    atomic_write_json(RESULTS / f"{args.name}.json", result)
    atomic_write_text(RESULTS / f"{args.name}.md", markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
