"""Where an int8 model's time goes: ONNX Runtime's per-kernel profile of fp32/int8 pairs, summed by op type.

The compression benchmark measures end-to-end batch-1 latency; this script explains it. For each pair of ONNX
files (an fp32 model and its int8 QDQ version) it profiles both with ONNX Runtime's own profiler
(`devicefit.hardware.layer_latencies`, same session settings as every latency figure of devicefit: all graph
optimisations, 1 thread, batch 1) and sums the per-kernel medians by op type (`QLinearConv`, `QuantizeLinear`,
`Conv`, ...). The gap between the end-to-end median and the summed kernels is the framework's per-run overhead.

    python benchmarks/int8_breakdown.py --pair resnet8=WORK/resnet8-cifar10-full-fp32.onnx,\
WORK/resnet8-cifar10-full-1.onnx --name int8-breakdown    # WORK: compression.py's --work-dir

Writes benchmarks/results/<name>.{json,md} atomically, with the machine (CPU model and flags) it ran on.
"""

from __future__ import annotations

import argparse
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

from devicefit.core import atomic_write_json, atomic_write_text, machine_info
from devicefit.hardware import layer_latencies

RESULTS = Path(__file__).resolve().parent / "results"


def by_op_type(path: Path, repeats: int) -> dict[str, Any]:
    """Profile one ONNX file: per-op-type kernel time (sum of per-node medians, ms), node counts, end-to-end."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        prof = layer_latencies(path, repeats=repeats, warmup=20, threads=1)  # the file's own input shape, batch 1
    ms: dict[str, float] = defaultdict(float)
    nodes: dict[str, int] = defaultdict(int)
    for layer in prof:
        ms[layer.op_type] += layer.median_ms
        nodes[layer.op_type] += 1
    return {"file": str(path), "end_to_end_ms": prof.end_to_end_ms, "sum_of_kernels_ms": prof.sum_of_layers_ms,
            "overhead_ms": prof.overhead_ms, "op_ms": dict(sorted(ms.items(), key=lambda kv: -kv[1])),
            "op_nodes": dict(nodes), "method": prof.method}


def parse_pair(text: str) -> tuple[str, Path, Path]:
    """'name=fp32.onnx,int8.onnx' → (name, fp32 path, int8 path); a clear error naming the argument else."""
    name, sep, files = text.partition("=")
    paths = [Path(p) for p in files.split(",")]
    if not sep or not name or len(paths) != 2:
        raise SystemExit(f"--pair expects NAME=FP32.onnx,INT8.onnx, got {text!r}")
    for p in paths:
        if not p.is_file():
            raise SystemExit(f"--pair {name}: no such ONNX file {p}")
    return name, paths[0], paths[1]


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [f"# int8 vs fp32: where the time goes ({result['name']})", "",
             f"Machine: {m.get('cpu_model', '?')}, flags {m.get('cpu_flags')}; ONNX Runtime "
             f"{result['runtime_version']} CPU, 1 thread, batch 1, all graph optimisations. Kernel times: ONNX "
             f"Runtime's profiler, median per node over {result['repeats']} runs after 20 warm-ups, summed by op "
             "type. Overhead: end-to-end median of the same profiled runs minus the summed kernels.", ""]
    for pair in result["pairs"]:
        fp, q = pair["fp32"], pair["int8"]
        ops = sorted(set(fp["op_ms"]) | set(q["op_ms"]), key=lambda k: -(fp["op_ms"].get(k, 0) + q["op_ms"].get(k, 0)))
        lines += [f"## {pair['name']}", "",
                  f"End to end: fp32 {fp['end_to_end_ms']:.3f} ms, int8 {q['end_to_end_ms']:.3f} ms "
                  f"(×{fp['end_to_end_ms'] / q['end_to_end_ms']:.2f}).", "",
                  "| op type | fp32 ms (nodes) | int8 ms (nodes) |", "|---|---:|---:|"]
        for op in ops:
            cells = [f"{d['op_ms'][op]:.3f} ({d['op_nodes'][op]})" if op in d["op_ms"] else "–" for d in (fp, q)]
            lines.append(f"| {op} | {cells[0]} | {cells[1]} |")
        lines += [f"| all kernels | {fp['sum_of_kernels_ms']:.3f} | {q['sum_of_kernels_ms']:.3f} |",
                  f"| per-run overhead | {fp['overhead_ms']:.3f} | {q['overhead_ms']:.3f} |", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pair", action="append", required=True, help="NAME=FP32.onnx,INT8.onnx (repeatable)")
    ap.add_argument("--repeats", type=int, default=200, help="profiled runs per model")
    ap.add_argument("--name", default="int8-breakdown", help="results file stem")
    args = ap.parse_args()
    pairs = [parse_pair(p) for p in args.pair]
    rows = []
    for name, fp32, int8 in pairs:
        rows.append({"name": name, "fp32": by_op_type(fp32, args.repeats),
                     "int8": by_op_type(int8, args.repeats)})
        fp, q = rows[-1]["fp32"]["end_to_end_ms"], rows[-1]["int8"]["end_to_end_ms"]
        print(f"{name}: fp32 {fp:.3f} ms, int8 {q:.3f} ms", flush=True)
    result = {"name": args.name, "repeats": args.repeats, "machine": machine_info(),
              "runtime_version": rows[0]["fp32"]["method"]["runtime_version"], "pairs": rows}
    atomic_write_json(RESULTS / f"{args.name}.json", result)
    atomic_write_text(RESULTS / f"{args.name}.md", markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
