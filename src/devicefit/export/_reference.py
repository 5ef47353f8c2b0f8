"""The integer reference executor: numpy kernels, one registered per op kind, the source of truth.

Every kernel follows the TFLite int8 reference kernels (offsets, int32 accumulation, per-channel
requantization with `multiply_by_quantized_multiplier`, clamping to the fused activation range). Inputs
carry a leading batch axis of any size N, so whole test splits run in one call.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from devicefit.core import DataError, Registry

from ._fixedpoint import multiply_by_quantized_multiplier
from ._fuse_add import CONV_ADD_KINDS, split_conv_add
from ._ir import QGraph, QOp

__all__ = ["REFERENCE_KERNELS", "run_reference"]

Kernel = Callable[[QOp, list[np.ndarray], QGraph], np.ndarray]
REFERENCE_KERNELS: Registry[Kernel] = Registry("reference kernel")


def run_reference(graph: QGraph, x: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
    """Run `graph` on int8 input `x` of shape (N, *input_shape[1:]) (NHWC); returns int8 (N, *output_shape[1:])."""
    expected = graph.tensors[graph.input].shape[1:]
    x = np.asarray(x)
    if x.dtype != np.int8 or tuple(x.shape[1:]) != tuple(expected):
        raise DataError(f"reference input must be int8 of shape (N, {', '.join(map(str, expected))}), "
                        f"got {x.dtype} {tuple(x.shape)}")
    outs = [_run_batch(graph, x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0, *graph.tensors[graph.output].shape[1:]), np.int8)


def _run_batch(graph: QGraph, x: np.ndarray) -> np.ndarray:
    values: dict[str, np.ndarray] = {graph.input: x}
    last_use = {t: max(graph.consumers(t), default=-1) for t in graph.tensors}
    for i, op in enumerate(graph.ops):
        values[op.output] = REFERENCE_KERNELS.get(op.kind)(op, [values[t] for t in op.inputs], graph)
        for t in op.inputs:  # free what no later op reads
            if last_use[t] == i and t != graph.output:
                values.pop(t, None)
    return values[graph.output]


def _requantize(acc: np.ndarray, op: QOp, out_zp: int) -> np.ndarray:
    """Per-channel (last axis) requantization of int32 accumulators → clamped int8."""
    y = multiply_by_quantized_multiplier(acc, op.consts["multiplier"], op.consts["shift"]) + out_zp
    return np.clip(y, op.attrs["act_min"], op.attrs["act_max"]).astype(np.int8)


def _patches(x: np.ndarray, kh: int, kw: int, stride: tuple[int, int], pad: tuple[int, int, int, int],
             fill: int) -> np.ndarray:
    """(N, H, W, C) → (N, Ho, Wo, kh, kw, C) windows over the input padded with `fill`."""
    pt, pl, pb, pr = pad
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=fill)
    n, hp, wp, c = xp.shape
    ho, wo = (hp - kh) // stride[0] + 1, (wp - kw) // stride[1] + 1
    s = xp.strides
    return np.lib.stride_tricks.as_strided(
        xp, (n, ho, wo, kh, kw, c), (s[0], s[1] * stride[0], s[2] * stride[1], s[1], s[2], s[3]), writeable=False)


def _exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer matmul through float64 BLAS: exact while |sums| < 2^53 (int8 · int8 · K < 2^53 for any K here)."""
    return np.rint(a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)


@REFERENCE_KERNELS.register("conv2d")
def _conv2d(op: QOp, inputs: list[np.ndarray], graph: QGraph) -> np.ndarray:
    (x,), w = inputs, op.consts["weights"]  # w: (Cout, KH, KW, Cin)
    zp_in = graph.tensors[op.inputs[0]].zero_point
    p = _patches(x, w.shape[1], w.shape[2], op.attrs["stride"], op.attrs["padding"], zp_in)
    n, ho, wo = p.shape[:3]
    cols = p.reshape(n * ho * wo, -1).astype(np.float64) - zp_in  # padding contributes (zp - zp) = 0
    acc = _exact_matmul(cols, w.reshape(w.shape[0], -1).T) + op.consts["bias"]
    return _requantize(acc, op, graph.tensors[op.output].zero_point).reshape(n, ho, wo, w.shape[0])


@REFERENCE_KERNELS.register("depthwise_conv2d")
def _depthwise_conv2d(op: QOp, inputs: list[np.ndarray], graph: QGraph) -> np.ndarray:
    (x,), w = inputs, op.consts["weights"]  # w: (KH, KW, C)
    zp_in = graph.tensors[op.inputs[0]].zero_point
    p = _patches(x, w.shape[0], w.shape[1], op.attrs["stride"], op.attrs["padding"], zp_in)
    acc = np.zeros(p.shape[:3] + p.shape[5:], np.int64)
    for i in range(w.shape[0]):  # one kernel tap at a time: int32-exact, far faster than a 6-D einsum
        for j in range(w.shape[1]):
            acc += (p[:, :, :, i, j, :].astype(np.int32) - zp_in) * w[i, j].astype(np.int32)
    acc += op.consts["bias"]
    return _requantize(acc, op, graph.tensors[op.output].zero_point)


@REFERENCE_KERNELS.register("fully_connected")
def _fully_connected(op: QOp, inputs: list[np.ndarray], graph: QGraph) -> np.ndarray:
    (x,), w = inputs, op.consts["weights"]  # x: (N, Cin), w: (Cout, Cin)
    zp_in = graph.tensors[op.inputs[0]].zero_point
    acc = _exact_matmul(x.astype(np.int64) - zp_in, w.T) + op.consts["bias"]
    return _requantize(acc, op, graph.tensors[op.output].zero_point)


@REFERENCE_KERNELS.register("add")
def _add(op: QOp, inputs: list[np.ndarray], graph: QGraph) -> np.ndarray:
    """TFLite int8 ADD: both inputs rescaled to a common 2^-left_shift grid, summed, rescaled to the output."""
    a = op.attrs
    t1, t2, to = (graph.tensors[t] for t in (*op.inputs, op.output))
    s1 = multiply_by_quantized_multiplier((inputs[0].astype(np.int64) - t1.zero_point) << a["left_shift"],
                                          a["in1_multiplier"], a["in1_shift"])
    s2 = multiply_by_quantized_multiplier((inputs[1].astype(np.int64) - t2.zero_point) << a["left_shift"],
                                          a["in2_multiplier"], a["in2_shift"])
    y = multiply_by_quantized_multiplier(s1 + s2, a["out_multiplier"], a["out_shift"]) + to.zero_point
    return np.clip(y, a["act_min"], a["act_max"]).astype(np.int8)


@REFERENCE_KERNELS.register("avg_pool2d")
def _avg_pool2d(op: QOp, inputs: list[np.ndarray], graph: QGraph) -> np.ndarray:
    """TFLite int8 AVERAGE_POOL_2D (same scale in and out): sum of the valid window, divided with rounding
    half away from zero by the count of valid (unpadded) elements."""
    (x,), kh, kw = inputs, *op.attrs["kernel"]
    fill_mask = np.ones((*x.shape[:3], 1), np.int64)
    p = _patches(x.astype(np.int64), kh, kw, op.attrs["stride"], op.attrs["padding"], 0)
    cnt = _patches(fill_mask, kh, kw, op.attrs["stride"], op.attrs["padding"], 0).sum(axis=(3, 4))
    acc = p.sum(axis=(3, 4))
    avg = np.where(acc > 0, (acc + cnt // 2) // cnt, -((-acc + cnt // 2) // cnt))
    return np.clip(avg, op.attrs["act_min"], op.attrs["act_max"]).astype(np.int8)


@REFERENCE_KERNELS.register("max_pool2d")
def _max_pool2d(op: QOp, inputs: list[np.ndarray], graph: QGraph) -> np.ndarray:
    (x,), kh, kw = inputs, *op.attrs["kernel"]
    p = _patches(x, kh, kw, op.attrs["stride"], op.attrs["padding"], -128)
    return np.clip(p.max(axis=(3, 4)), op.attrs["act_min"], op.attrs["act_max"]).astype(np.int8)


@REFERENCE_KERNELS.register("reshape")
def _reshape(op: QOp, inputs: list[np.ndarray], graph: QGraph) -> np.ndarray:
    return inputs[0].reshape((len(inputs[0]), *graph.tensors[op.output].shape[1:]))


def _conv_add(op: QOp, inputs: list[np.ndarray], graph: QGraph) -> np.ndarray:
    """A fused conv + residual add: exactly the unfused conv kernel, then the add kernel on its int8 output."""
    conv, add = split_conv_add(op)
    mid = REFERENCE_KERNELS.get(conv.kind)(conv, inputs[:1], graph)
    return REFERENCE_KERNELS.get("add")(add, [inputs[1], mid] if op.attrs["skip_first"] else [mid, inputs[1]], graph)


for _kind in CONV_ADD_KINDS.values():
    REFERENCE_KERNELS.add(_kind, _conv_add)
