"""Per-layer latency from ONNX Runtime's own profiler, mapped back to PyTorch module paths and blocks.

The runtime executes its optimised graph (fused Conv+activation, NCHWc layout), so a measured node may
cover several exported nodes; each is traced back to the exported node of the op it runs (its anchor).
"""

from __future__ import annotations

import ast
import json
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from torch import nn

from devicefit.core import ConfigError, DataError, check_int, machine_info

from ._profile import ModelSource, OnnxModel, onnx_model, ort_runner, ort_session, resolve_threads, time_runs_ms
from ._stats import summarize_samples

__all__ = ["BlockLatency", "LayerLatency", "LayerProfile", "aggregate_by_block", "layer_latencies"]

_SUFFIXES = ("_nchwc",)  # ORT names a layout-transformed node after its output tensor plus this suffix
RUNTIME_BLOCK = "(runtime)"  # nodes ORT inserted (ReorderInput/Output): no module
TOP_BLOCK = "(top level)"  # ops called in the root module's forward (torch.flatten, +)


@dataclass(frozen=True)
class LayerLatency:
    """One node the runtime executed: `node` (its name in the optimised graph), `op_type` (the kernel),
    `onnx_nodes` (exported nodes it covers, anchor first: the anchor and the ops fused into it from above,
    e.g. Conv+Relu; an Add/Relu that ORT folds into a Conv's epilogue is timed there but not listed),
    `module` (PyTorch module path; "" = the root module's forward, None = inserted by the runtime), and
    its kernel time over the repeats in ms (ORT's trace has 1 µs resolution)."""

    node: str
    op_type: str
    onnx_nodes: tuple[str, ...]
    module: str | None
    median_ms: float
    p10_ms: float
    p90_ms: float
    n: int


@dataclass(frozen=True)
class BlockLatency:
    """Sum of the per-layer medians of the layers whose module path starts with `block`."""

    block: str
    median_ms: float
    n_layers: int
    op_types: tuple[str, ...]


@dataclass(frozen=True)
class LayerProfile:
    """Per-layer medians plus the end-to-end median of the same profiled runs. They differ: the sum of
    kernel times leaves out framework overhead (`overhead_ms` = end-to-end - sum, can be negative with noise).
    Iterating or indexing a profile gives its layers in execution order."""

    layers: tuple[LayerLatency, ...]
    end_to_end_ms: float
    sum_of_layers_ms: float
    method: dict[str, Any]
    machine: dict[str, Any]

    @property
    def overhead_ms(self) -> float:
        return self.end_to_end_ms - self.sum_of_layers_ms

    def __iter__(self) -> Iterator[LayerLatency]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> LayerLatency:
        return self.layers[i]

    def to_dict(self) -> dict[str, Any]:
        return {"layers": [asdict(x) for x in self.layers], "end_to_end_ms": self.end_to_end_ms,
                "sum_of_layers_ms": self.sum_of_layers_ms, "overhead_ms": self.overhead_ms,
                "method": self.method, "machine": self.machine}


# --- ONNX node name → module path -------------------------------------------------------------------------


def scope_module_path(node: onnx.NodeProto) -> str | None:
    """The PyTorch module path of an exported node, or None if its name carries no scope.

    Dynamo exports carry `pkg.torch.onnx.name_scopes` metadata; legacy exports name nodes by scope, e.g.
    "/features/features.1/conv/conv.0/Conv" → "features.1.conv.0" (a segment extended by the next is dropped).
    """
    meta = {p.key: p.value for p in node.metadata_props}
    if "pkg.torch.onnx.name_scopes" in meta:
        scopes = ast.literal_eval(meta["pkg.torch.onnx.name_scopes"])
        return str(scopes[-2]) if len(scopes) >= 2 else ""
    if not node.name.startswith("/"):
        return None
    segs = node.name.strip("/").split("/")[:-1]
    kept = [s for i, s in enumerate(segs) if not (i + 1 < len(segs) and segs[i + 1].startswith(s + "."))]
    return ".".join(kept)


def _nearest_module(path: str | None, modules: set[str] | None) -> str | None:
    """`path`, or its longest prefix that names a module of the model (when the model is known)."""
    if path is None or modules is None:
        return path
    parts = path.split(".")
    while parts and ".".join(parts) not in modules:
        parts.pop()
    return ".".join(parts)


class _GraphIndex:
    """Lookup of exported nodes by name and by the tensor they produce."""

    def __init__(self, proto: onnx.ModelProto) -> None:
        self.by_name = {n.name: n for n in proto.graph.node if n.name}
        self.producer = {out: n for n in proto.graph.node for out in n.output}

    def anchor(self, node_name: str, op_type: str) -> list[onnx.NodeProto]:
        """Exported nodes covered by an executed node, the one running `op_type` first (empty if none)."""
        if node_name in self.by_name:
            return [self.by_name[node_name]]
        tensor = node_name
        for suffix in _SUFFIXES:
            tensor = tensor.removesuffix(suffix)
        start = self.producer.get(tensor)
        return self._walk_back(start, op_type) if start is not None else []

    def _walk_back(self, start: onnx.NodeProto, op_type: str, max_steps: int = 4) -> list[onnx.NodeProto]:
        chain, node = [start], start
        for _ in range(max_steps):
            if node.op_type == op_type or op_type.removeprefix("Fused") == node.op_type:
                return [node, *[n for n in chain if n is not node]]
            parent = next((self.producer[i] for i in node.input if i in self.producer), None)
            if parent is None:
                break
            chain.append(parent)
            node = parent
        return chain


# --- profiling --------------------------------------------------------------------------------------------


def _read_trace(path: str) -> list[dict[str, Any]]:
    try:
        events = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"ONNX Runtime profile {path} cannot be read: {e}") from None
    return events if isinstance(events, list) else []


def _node_times(events: list[dict[str, Any]], warmup: int) -> dict[str, tuple[str, list[float]]]:
    """node → (op, kernel ms per kept run), in execution order; runs are `model_run` windows after `warmup`."""
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session"
                  and e.get("name") == "model_run")[warmup:]
    out: dict[str, tuple[str, list[float]]] = {}
    for e in sorted((e for e in events if e.get("cat") == "Node"), key=lambda e: e["ts"]):
        name = str(e.get("name", ""))
        if not name.endswith("_kernel_time") or not any(a <= e["ts"] <= b for a, b in runs):
            continue
        node = name.removesuffix("_kernel_time")
        op = str(e.get("args", {}).get("op_name", "?"))
        out.setdefault(node, (op, []))[1].append(e["dur"] / 1000.0)  # µs → ms
    return out


def _layer(node: str, op: str, times: list[float], index: _GraphIndex, modules: set[str] | None) -> LayerLatency:
    covered = index.anchor(node, op)
    module = _nearest_module(scope_module_path(covered[0]), modules) if covered else None
    s = summarize_samples(times, max_cv=1e9)  # spread is reported per layer, not judged
    return LayerLatency(node, op, tuple(n.name for n in covered), module, s.median, s.p10, s.p90, s.n)


def _profile_runs(model: OnnxModel, threads: int, warmup: int, repeats: int,
                  tmp: str) -> tuple[list[dict[str, Any]], np.ndarray]:
    prefix = os.path.join(tmp, "ort_profile")
    session = ort_session(model, threads, enable_profiling=True, profile_file_prefix=prefix)
    try:
        run = ort_runner(model, session)  # one checked run: counts as warm-up
        e2e_ms = time_runs_ms(run, max(warmup - 1, 0), repeats)
    finally:
        trace = session.end_profiling()
    return _read_trace(trace), e2e_ms


def layer_latencies(
    model_or_onnx: ModelSource,
    *,
    input_shape: Sequence[int] | None = None,
    repeats: int = 30,
    warmup: int = 5,
    threads: int | None = None,
) -> LayerProfile:
    """Per-node kernel time (median over `repeats` runs after `warmup`) from ONNX Runtime's profiler.

    Same session settings as `measure_latency` on host-ort. The profile JSON is written to a temp dir and
    deleted. `end_to_end_ms` is the median of the same profiled runs (profiling slows them a little).
    """
    for name, value, low in (("repeats", repeats, 1), ("warmup", warmup, 1)):
        check_int(name, value, low)
    n_threads = resolve_threads(threads)
    modules = {n for n, _ in model_or_onnx.named_modules()} if isinstance(model_or_onnx, nn.Module) else None
    with onnx_model(model_or_onnx, input_shape) as model, tempfile.TemporaryDirectory(prefix="devicefit-prof-") as tmp:
        t0 = time.perf_counter()
        events, e2e_ms = _profile_runs(model, n_threads, warmup, repeats, tmp)
        index = _GraphIndex(model.proto)
        times = _node_times(events, warmup)
        layers = tuple(_layer(node, op, ms, index, modules) for node, (op, ms) in times.items())
        method = {"runtime": "onnxruntime", "runtime_version": ort.__version__, "profiler": "enable_profiling",
                  "threads": n_threads, "warmup": warmup, "repeats": repeats, "batch_size": 1, "opset": model.opset,
                  "precision": model.precision, "exporter": model.exporter, "wall_s": time.perf_counter() - t0}
    end_to_end = float(np.median(e2e_ms))
    machine = {**machine_info(), "runtime": "onnxruntime", "runtime_version": ort.__version__, "threads": n_threads}
    return LayerProfile(layers, end_to_end, float(sum(x.median_ms for x in layers)), method, machine)


def _block_of(module: str | None, depth: int) -> str:
    if module is None:
        return RUNTIME_BLOCK
    return ".".join(module.split(".")[:depth]) if module else TOP_BLOCK


def aggregate_by_block(layers: Sequence[LayerLatency] | LayerProfile, depth: int = 2) -> list[BlockLatency]:
    """Sum per-layer medians by the first `depth` parts of the module path ("features.1.conv.0" → "features.1"),
    in first-execution order; runtime-inserted nodes go to "(runtime)", root-level ops to "(top level)"."""
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise ConfigError(f"depth must be an int >= 1, got {depth!r}")
    groups: dict[str, list[LayerLatency]] = defaultdict(list)
    for layer in layers:
        groups[_block_of(layer.module, depth)].append(layer)
    return [BlockLatency(b, float(sum(x.median_ms for x in g)), len(g), tuple(dict.fromkeys(x.op_type for x in g)))
            for b, g in groups.items()]
