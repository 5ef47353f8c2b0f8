"""torch model + calibration inputs → int8 IR (TFLite int8 spec): per-channel symmetric int8 weights,
int32 bias, asymmetric int8 activations from calibrated ranges, fixed-point multiplier + shift per channel."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from devicefit.core import DataError, NotFittedError, Registry

from ._fixedpoint import INT32_MAX, quantize_multiplier
from ._fuse import FloatOp, fuse_graph
from ._ir import QGraph, QOp, QTensor
from ._ranges import RANGE_ESTIMATORS, RangeEstimator, qparams_from_range

__all__ = ["QUANTIZERS", "Int8Converter", "convert_to_int8", "dequantize_output", "quantize_input"]

CALIBRATED = ("conv2d", "depthwise_conv2d", "fully_connected", "add")
Quantizer = Callable[[FloatOp, list[QTensor], QTensor], QOp]
QUANTIZERS: Registry[Quantizer] = Registry("int8 quantizer")  # fused float op kind → its int8 QOp builder


class Int8Converter:
    """Converts a float model to a `QGraph`. `range_estimator` names an entry of `RANGE_ESTIMATORS`.

    `calibrate(model, inputs)` traces a copy of `model` in eval mode, fuses it, runs the float model over
    `inputs` (N, C, H, W) in batches of `batch_size` to estimate activation ranges and quantizes;
    the result is `graph_` (the model itself is never changed).
    """

    def __init__(self, range_estimator: str = "minmax", batch_size: int = 64) -> None:
        self.range_estimator = range_estimator
        self.batch_size = batch_size

    def calibrate(self, model: nn.Module, inputs: torch.Tensor | np.ndarray) -> Int8Converter:
        x = torch.as_tensor(np.asarray(inputs, dtype=np.float32))
        if x.ndim != 4 or len(x) == 0:
            raise DataError(f"calibration inputs must be a non-empty (N, C, H, W) batch, got shape {tuple(x.shape)}")
        model = copy.deepcopy(model).eval()
        ops, in_name, out_name, shapes = fuse_graph(model, x[:1])
        estimator = RANGE_ESTIMATORS.get(self.range_estimator)
        watch = {in_name: estimator(), **{op.out_node: estimator() for op in ops if op.kind in CALIBRATED}}
        _record_ranges(fx.symbolic_trace(model), x, watch, self.batch_size)
        self.float_ops_ = ops
        self.graph_ = _quantize(ops, in_name, out_name, shapes, watch)
        return self

    @property
    def graph(self) -> QGraph:
        if not hasattr(self, "graph_"):
            raise NotFittedError("Int8Converter: call calibrate(model, inputs) before reading graph")
        return self.graph_


def convert_to_int8(model: nn.Module, calibration: torch.Tensor | np.ndarray, *,
                    range_estimator: str = "minmax") -> QGraph:
    """One-call form of `Int8Converter(range_estimator).calibrate(model, calibration).graph_`."""
    return Int8Converter(range_estimator).calibrate(model, calibration).graph_


def quantize_input(graph: QGraph, x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Float (N, C, H, W) (or (N, C)) → int8 NHWC in the graph input's quantization."""
    t = graph.tensors[graph.input]
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 4:
        a = a.transpose(0, 2, 3, 1)
    if tuple(a.shape[1:]) != tuple(t.shape[1:]):
        raise DataError(f"input of shape {tuple(np.shape(x))} does not match the graph input {t.shape} (NHWC)")
    return np.clip(np.round(a / t.scale) + t.zero_point, -128, 127).astype(np.int8)


def dequantize_output(graph: QGraph, q: np.ndarray) -> np.ndarray:
    """int8 graph output → float32 real values."""
    t = graph.tensors[graph.output]
    return ((np.asarray(q, np.float32) - t.zero_point) * t.scale).astype(np.float32)


class _Recorder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, watch: dict[str, RangeEstimator]) -> None:
        super().__init__(gm)
        self.watch = watch

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        if n.name in self.watch:
            self.watch[n.name].update(out.detach().numpy())
        return out


@torch.no_grad()
def _record_ranges(gm: fx.GraphModule, x: torch.Tensor, watch: dict[str, RangeEstimator], batch_size: int) -> None:
    rec = _Recorder(gm, watch)
    for i in range(0, len(x), batch_size):
        rec.run(x[i:i + batch_size])


def _nhwc(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (1, shape[2], shape[3], shape[1]) if len(shape) == 4 else (1, *shape[1:])


def _quantize(ops: list[FloatOp], in_name: str, out_name: str, shapes: dict[str, tuple[int, ...]],
              ranges: dict[str, RangeEstimator]) -> QGraph:
    tensors = {in_name: QTensor(in_name, _nhwc(shapes[in_name]), *qparams_from_range(*ranges[in_name].range()))}
    qops = []
    for op in ops:
        src = tensors[op.inputs[0]]
        if op.kind in CALIBRATED:
            scale, zp = qparams_from_range(*ranges[op.out_node].range())
        else:  # pools and reshape keep their input's quantization (TFLite requires it)
            scale, zp = src.scale, src.zero_point
        out = QTensor(op.out_node, _nhwc(shapes[op.out_node]), scale, zp)
        tensors[out.name] = out
        qops.append(QUANTIZERS.get(op.kind)(op, [tensors[t] for t in op.inputs], out))
    return QGraph(tensors, tuple(qops), in_name, out_name)


def _act_range(act: str, out: QTensor) -> tuple[int, int]:
    """TFLite CalculateActivationRangeQuantized: the fused activation as an int8 clamp."""
    lo, hi = -128, 127
    if act in ("relu", "relu6"):
        lo = max(lo, out.zero_point)
    if act == "relu6":
        hi = min(hi, out.zero_point + round(6.0 / out.scale))
    return lo, hi


def _per_channel(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel int8 weights in [-127, 127] and their scales along `axis`."""
    other = tuple(i for i in range(w.ndim) if i != axis)
    amax = np.abs(w).max(axis=other)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32).astype(np.float64)  # float32, as in .tflite
    q = np.clip(np.round(w / np.expand_dims(scale, other)), -127, 127).astype(np.int8)
    return q, scale


def _weighted_op(op: FloatOp, ins: list[QTensor], out: QTensor, w: np.ndarray, axis: int) -> QOp:
    wq, w_scale = _per_channel(w, axis)
    s_in = ins[0].scale
    # int32 headroom for the accumulation: |bias| + 2 · 128 · 127 · taps stays below 2^31, so no int32
    # accumulator (ours, the C kernels' folded bias, TFLite Micro's) can overflow; only degenerate input
    # scales (bias ≫ products) ever reach this clip.
    limit = INT32_MAX - 2 * 128 * 127 * (wq.size // len(w_scale))
    bias = np.clip(np.round(op.params["bias"].numpy() / (s_in * w_scale)), -limit, limit).astype(np.int32)
    mult, shift = zip(*(quantize_multiplier(s_in * float(s) / out.scale) for s in w_scale), strict=True)
    act_min, act_max = _act_range(op.act, out)
    attrs: dict[str, Any] = {"activation": op.act, "act_min": act_min, "act_max": act_max,
                             "weight_scales": tuple(float(v) for v in w_scale)}
    attrs.update({k: tuple(op.params[k]) for k in ("stride", "padding") if k in op.params})
    consts = {"weights": wq, "bias": bias, "multiplier": np.array(mult, np.int32), "shift": np.array(shift, np.int32)}
    return QOp(op.kind, op.name, tuple(op.inputs), out.name, attrs, consts)


def _conv(op: FloatOp, ins: list[QTensor], out: QTensor) -> QOp:
    return _weighted_op(op, ins, out, op.params["weight"].permute(0, 2, 3, 1).numpy(), 0)  # (Cout, KH, KW, Cin)


def _depthwise(op: FloatOp, ins: list[QTensor], out: QTensor) -> QOp:
    return _weighted_op(op, ins, out, op.params["weight"][:, 0].permute(1, 2, 0).numpy(), 2)  # (KH, KW, C)


def _fc(op: FloatOp, ins: list[QTensor], out: QTensor) -> QOp:
    return _weighted_op(op, ins, out, op.params["weight"].numpy(), 0)  # (Cout, Cin)


def _add(op: FloatOp, ins: list[QTensor], out: QTensor) -> QOp:
    """TFLite PrepareGeneralSubOp for int8: left shift 20, inputs scaled to twice the larger input scale."""
    left_shift = 20
    twice_max = 2 * max(ins[0].scale, ins[1].scale)
    m1, s1 = quantize_multiplier(ins[0].scale / twice_max)
    m2, s2 = quantize_multiplier(ins[1].scale / twice_max)
    mo, so = quantize_multiplier(twice_max / ((1 << left_shift) * out.scale))
    act_min, act_max = _act_range(op.act, out)
    attrs = {"left_shift": left_shift, "in1_multiplier": m1, "in1_shift": s1, "in2_multiplier": m2,
             "in2_shift": s2, "out_multiplier": mo, "out_shift": so, "activation": op.act, "act_min": act_min,
             "act_max": act_max}
    return QOp("add", op.name, tuple(op.inputs), out.name, attrs)


def _pool(op: FloatOp, ins: list[QTensor], out: QTensor) -> QOp:
    attrs = {k: tuple(op.params[k]) for k in ("kernel", "stride", "padding")}
    return QOp(op.kind, op.name, tuple(op.inputs), out.name, {**attrs, "act_min": -128, "act_max": 127})


def _reshape(op: FloatOp, ins: list[QTensor], out: QTensor) -> QOp:
    return QOp("reshape", op.name, tuple(op.inputs), out.name)


for _kind, _fn in (("conv2d", _conv), ("depthwise_conv2d", _depthwise), ("fully_connected", _fc), ("add", _add),
                   ("avg_pool2d", _pool), ("max_pool2d", _pool), ("reshape", _reshape)):
    QUANTIZERS.add(_kind, _fn)
