"""Running ONNX models for compression: batched ONNX Runtime inference, calibration histograms of every
activation, test accuracy of an `.onnx` file, and the op types ONNX Runtime really executes after fusion."""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from devicefit.core import DataError
from devicefit.data import ArrayDataset, to_float_tensor

from ._calibrators import TensorHistogram

__all__ = ["FLOAT_COMPUTE_OPS", "INT8_COMPUTE_OPS", "calibration_histograms", "evaluate_onnx", "runtime_op_counts"]

FLOAT_COMPUTE_OPS = frozenset({"Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul"})
INT8_COMPUTE_OPS = frozenset({"QLinearConv", "QGemm", "QLinearMatMul", "MatMulIntegerToFloat", "ConvInteger",
                              "MatMulInteger", "NhwcQLinearConv", "DynamicQuantizeMatMul"})


def _session(model: onnx.ModelProto | str | os.PathLike[str], threads: int = 1,
             optimized_path: str | None = None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if optimized_path is not None:
        so.optimized_model_filepath = optimized_path
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def _batches(x: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    for i in range(0, len(x), batch_size):
        yield np.ascontiguousarray(x[i:i + batch_size], dtype=np.float32)


def _with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    existing = {o.name for o in m.graph.output}
    m.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names
                          if n not in existing)
    return m


def calibration_histograms(model: onnx.ModelProto, x: np.ndarray, names: Sequence[str], *, bins: int = 2048,
                           batch_size: int = 64) -> dict[str, TensorHistogram]:
    """Histograms of tensors `names` of the fp32 `model` (dynamic batch, one input) over inputs `x` (N, ...):
    a first pass finds each tensor's range, a second fills `bins` bins over it."""
    sess = _session(_with_outputs(model, names))
    in_name = sess.get_inputs()[0].name
    lo = {n: 0.0 for n in names}
    hi = {n: 0.0 for n in names}
    for xb in _batches(x, batch_size):
        for n, v in zip(names, sess.run(list(names), {in_name: xb}), strict=True):
            lo[n], hi[n] = min(lo[n], float(v.min())), max(hi[n], float(v.max()))
    counts = {n: np.zeros(bins) for n in names}
    for xb in _batches(x, batch_size):
        for n, v in zip(names, sess.run(list(names), {in_name: xb}), strict=True):
            top = hi[n] if hi[n] > lo[n] else lo[n] + 1e-8
            counts[n] += np.histogram(v, bins=bins, range=(lo[n], top))[0]
    return {n: TensorHistogram(counts[n], lo[n], hi[n] if hi[n] > lo[n] else lo[n] + 1e-8) for n in names}


def evaluate_onnx(path: str | os.PathLike[str] | onnx.ModelProto, ds: ArrayDataset, *, batch_size: int = 256,
                  threads: int = 1) -> dict[str, float]:
    """Top-1 accuracy of an ONNX classifier (dynamic batch, input normalised like `devicefit.train.evaluate`)
    on every example of `ds`: {"accuracy", "n"}."""
    sess = _session(path, threads)
    inp = sess.get_inputs()[0]
    shape = list(inp.shape)
    if len(shape) != 4 or [d for d in shape[1:]] != list(ds.input_shape):
        raise DataError(f"ONNX model input {inp.name!r} has shape {shape}, but {ds.name} examples are "
                        f"{ds.input_shape} (C, H, W)")
    if isinstance(shape[0], int) and shape[0] != batch_size:
        batch_size = shape[0]
    correct = 0
    for i in range(0, len(ds), batch_size):
        xb = to_float_tensor(ds, ds.x[i:i + batch_size]).numpy()
        logits = sess.run(None, {inp.name: xb})[0]
        correct += int((logits.argmax(axis=1) == ds.y[i:i + batch_size]).sum())
    return {"accuracy": correct / len(ds), "n": len(ds)}


def runtime_op_counts(path: str | os.PathLike[str] | onnx.ModelProto) -> dict[str, int]:
    """Op types (with domain prefix when not ONNX) in the graph ONNX Runtime runs after its full optimisation
    on this CPU, e.g. {"QLinearConv": 25, ...}: the way to check that convolutions really run in int8."""
    with tempfile.TemporaryDirectory(prefix="devicefit-opt-") as tmp:
        opt = str(Path(tmp) / "optimized.onnx")
        _session(path, 1, optimized_path=opt)
        graph = onnx.load(opt).graph
    return dict(Counter(n.op_type for n in graph.node))
