"""Peak memory of a model: analytic peak activation bytes and, on host-ort, the runtime's own figure
(peak RSS of a fresh process that loads and runs the model, minus a process that only imports the runtime).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import onnxruntime as ort
from torch import nn

from devicefit.core import ConfigError, Measurement, UnsupportedOpError, machine_info
from devicefit.nn import analyze

from ._profile import ModelSource, onnx_model, resolve_threads
from ._target import Target, get_target

__all__ = ["MemoryReport", "analytic_peak_activation_bytes", "measure_memory", "runtime_peak_rss_bytes"]

RSS_WHAT = "process peak RSS delta, includes weights, arena and runtime buffers"
PROBE = "VmHWM of /proc/self/status (else resource.getrusage(RUSAGE_SELF).ru_maxrss) in a fresh subprocess"
ELEMENT_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}

# The child scripts print their peak RSS in bytes. Linux keeps ru_maxrss across exec (a child of a large
# parent reports the parent's peak), so VmHWM of /proc/self/status (reset by exec) comes first.
_RSS = """import os, resource, sys
status = "/proc/self/status"
hwm = [l.split()[1] for l in open(status) if l.startswith("VmHWM:")] if os.path.exists(status) else []
kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(int(hwm[0]) * 1024 if hwm else kib if sys.platform == "darwin" else kib * 1024)
"""
_BASELINE = "import numpy, onnxruntime\n" + _RSS
_SESSION = """import json, sys
import numpy as np, onnxruntime as ort
path, threads, inputs = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
so = ort.SessionOptions()
so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
rng = np.random.default_rng(0)
s.run(None, {k: rng.standard_normal(v[0]).astype(v[1]) for k, v in inputs.items()})
""" + _RSS


@dataclass(frozen=True)
class MemoryReport:
    """`analytic` (peak activation bytes from the liveness pass, None for an .onnx file) and `runtime`
    (the measured process figure, None where not measurable: host-torch, non-host targets)."""

    target: str
    analytic: Measurement | None
    runtime: Measurement | None

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "analytic": self.analytic and self.analytic.to_dict(),
                "runtime": self.runtime and self.runtime.to_dict()}


def analytic_peak_activation_bytes(model: nn.Module, input_shape: Sequence[int], *, precision: str = "fp32") -> int:
    """Peak live activation bytes at batch 1 from `devicefit.nn.analyze` at the precision's element size."""
    if precision not in ELEMENT_BYTES:
        raise ConfigError(f"precision must be one of {', '.join(ELEMENT_BYTES)}, got {precision!r}")
    return analyze(model, input_shape, act_bits=8 * ELEMENT_BYTES[precision]).peak_activation_bytes


def _child_rss_bytes(code: str, *args: str) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300)
    if proc.returncode != 0:
        tail = " ".join(proc.stderr.split())[-600:]
        raise UnsupportedOpError(f"ONNX Runtime {ort.__version__} failed in the memory probe process: {tail}")
    return int(proc.stdout.strip().splitlines()[-1])


def runtime_peak_rss_bytes(model_or_onnx: ModelSource, *, input_shape: Sequence[int] | None = None,
                           threads: int | None = None) -> Measurement:
    """Peak RSS of a fresh process that creates an ORT session and runs one inference, minus that of a
    process that only imports onnxruntime and numpy (see `PROBE`), in bytes. Includes weights, the arena
    and runtime buffers, so it is an upper bound on what the model itself needs on this runtime."""
    n_threads = resolve_threads(threads)
    with onnx_model(model_or_onnx, input_shape) as model:
        inputs = {k: [list(shape), dt.name] for k, (shape, dt) in model.inputs.items()}
        loaded = _child_rss_bytes(_SESSION, str(model.path), str(n_threads), json.dumps(inputs))
        baseline = _child_rss_bytes(_BASELINE)
        method = {"what": RSS_WHAT, "runtime": "onnxruntime", "runtime_version": ort.__version__,
                  "threads": n_threads, "batch_size": 1, "probe": PROBE,
                  "baseline": "import numpy, onnxruntime", "exporter": model.exporter, "precision": model.precision,
                  "loaded_rss_bytes": loaded, "baseline_rss_bytes": baseline, "repeats": 1}
    machine = {**machine_info(), "runtime": "onnxruntime", "runtime_version": ort.__version__, "threads": n_threads}
    return Measurement("peak_memory", float(max(loaded - baseline, 0)), "bytes", method, {}, machine)


def _analytic(model_or_onnx: ModelSource, input_shape: Sequence[int] | None, t: Target) -> Measurement | None:
    if not isinstance(model_or_onnx, nn.Module) or input_shape is None:
        return None
    precision = t.precisions[0]
    nbytes = analytic_peak_activation_bytes(model_or_onnx, input_shape, precision=precision)
    method = {"what": "analytic peak of simultaneously live activation buffers (torch.fx liveness), batch 1",
              "element_bytes": ELEMENT_BYTES[precision], "precision": precision, "input_shape": list(input_shape)}
    return Measurement("peak_activation", float(nbytes), "bytes", method, {}, {})


def measure_memory(model_or_onnx: ModelSource, target: str | Target = "host-ort", *,
                   input_shape: Sequence[int] | None = None, threads: int | None = None) -> MemoryReport:
    """Analytic peak activation bytes (for an `nn.Module`, at the target's first precision) and, on host-ort,
    the process peak-RSS delta from `runtime_peak_rss_bytes`; figures that cannot be had here are None."""
    t = get_target(target)
    analytic = _analytic(model_or_onnx, input_shape, t)
    runtime = None
    if t.kind == "host" and t.runtime == "onnxruntime":
        runtime = runtime_peak_rss_bytes(model_or_onnx, input_shape=input_shape, threads=threads)
    if analytic is None and runtime is None:
        raise ConfigError(f"no memory figure for {type(model_or_onnx).__name__} on {t.name!r}: pass an nn.Module "
                             f"with input_shape, or use host-ort")
    return MemoryReport(t.name, analytic, runtime)
