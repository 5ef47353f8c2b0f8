"""int8 IR → .tflite flatbuffer (TFLite int8 spec), and a cross-check in TensorFlow Lite Micro's Python
interpreter (`tflite-micro` package: TFLM's reference kernels on the host), including the arena TFLM needs.

Optional dependencies, imported lazily: `tflite` + `flatbuffers` (writing), `tflite-micro` (running).
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np

from devicefit.core import ConfigError, DevicefitError, Registry, UnsupportedOpError

from ._fuse_add import CONV_ADD_KINDS, split_conv_add
from ._ir import QGraph, QOp, QTensor

__all__ = ["TFLITE_WRITERS", "TFLM_ARENA_METHOD", "tflite_bytes", "tflm_arena", "tflm_run"]

TFLM_ARENA_METHOD = ("total of tflite-micro's RecordingMicroAllocator (x86-64 host build) after one invoke, "
                     "confirmed by invoking with exactly that arena_size")


def _imports() -> tuple[Any, Any]:
    try:
        import flatbuffers
        import tflite
    except ImportError as e:
        raise DevicefitError("writing .tflite needs the `tflite` and `flatbuffers` packages: "
                             "pip install tflite flatbuffers") from e
    return flatbuffers, tflite


def _same_or_valid(src: QTensor, dst: QTensor, k: tuple[int, int], s: tuple[int, int],
                   pad: tuple[int, int, int, int]) -> str | None:
    """'VALID' or 'SAME' when TFLite's padding rule gives exactly `pad` and the output size, else None."""
    if not any(pad):
        return "VALID"
    for axis, (before, after) in ((0, (pad[0], pad[2])), (1, (pad[1], pad[3]))):
        size, out = src.shape[1 + axis], dst.shape[1 + axis]
        out_same = math.ceil(size / s[axis])
        total = max((out_same - 1) * s[axis] + k[axis] - size, 0)
        if out_same != out or (total // 2, total - total // 2) != (before, after):
            return None
    return "SAME"


class _Writer:
    """Accumulates tensors, buffers, operator codes and operators, then serialises one subgraph."""

    def __init__(self, graph: QGraph) -> None:
        self.fb, self.tfl = _imports()
        self.g = graph
        self.tensors: list[dict[str, Any]] = []
        self.index: dict[str, int] = {}
        self.buffers: list[bytes] = [b""]  # buffer 0: the empty sentinel
        self.codes: list[int] = []
        self.ops: list[tuple[int, list[int], list[int], int, Any]] = []

    def tensor(self, name: str, shape: tuple[int, ...], dtype: str, scale: Any, zp: Any, qdim: int = 0,
               data: np.ndarray | None = None) -> int:
        buf = 0
        if data is not None:
            self.buffers.append(np.ascontiguousarray(data).tobytes())
            buf = len(self.buffers) - 1
        self.tensors.append({"name": name, "shape": shape, "dtype": dtype, "buffer": buf, "qdim": qdim,
                             "scale": np.atleast_1d(np.asarray(scale, np.float32)),
                             "zp": np.atleast_1d(np.asarray(zp, np.int64))})
        self.index[name] = len(self.tensors) - 1
        return self.index[name]

    def activation(self, name: str, shape: tuple[int, ...] | None = None) -> int:
        if name not in self.index:
            t = self.g.tensors[name]
            self.tensor(name, shape or t.shape, "int8", t.scale, t.zero_point)
        return self.index[name]

    def op(self, code: int, inputs: list[int], outputs: list[int], options: tuple[int, Any]) -> None:
        if code not in self.codes:
            self.codes.append(code)
        self.ops.append((self.codes.index(code), inputs, outputs, *options))

    def serialize(self, inputs: list[int], outputs: list[int]) -> bytes:
        b = self.fb.Builder(1024)
        buffers = [self._buffer(b, data) for data in self.buffers]
        tensors = [self._tensor(b, t) for t in self.tensors]
        ops = [self._operator(b, *o) for o in self.ops]
        codes = []
        for code in self.codes:
            _m("OperatorCode").Start(b)
            _m("OperatorCode").AddDeprecatedBuiltinCode(b, min(code, 127))
            _m("OperatorCode").AddBuiltinCode(b, code)
            _m("OperatorCode").AddVersion(b, 1)
            codes.append(_m("OperatorCode").End(b))
        sub_tensors, sub_ops = _vector(b, tensors), _vector(b, ops)
        sub_in, sub_out = _ints(b, inputs), _ints(b, outputs)
        name = b.CreateString("main")
        _m("SubGraph").Start(b)
        _m("SubGraph").AddTensors(b, sub_tensors)
        _m("SubGraph").AddInputs(b, sub_in)
        _m("SubGraph").AddOutputs(b, sub_out)
        _m("SubGraph").AddOperators(b, sub_ops)
        _m("SubGraph").AddName(b, name)
        subgraph = _m("SubGraph").End(b)
        subgraphs, code_vec, buf_vec = _vector(b, [subgraph]), _vector(b, codes), _vector(b, buffers)
        desc = b.CreateString("devicefit int8 export")
        _m("Model").Start(b)
        _m("Model").AddVersion(b, 3)
        _m("Model").AddOperatorCodes(b, code_vec)
        _m("Model").AddSubgraphs(b, subgraphs)
        _m("Model").AddDescription(b, desc)
        _m("Model").AddBuffers(b, buf_vec)
        b.Finish(_m("Model").End(b), file_identifier=b"TFL3")
        return bytes(b.Output())

    def _buffer(self, b: Any, data: bytes) -> int:
        vec = b.CreateByteVector(data) if data else None
        _m("Buffer").Start(b)
        if vec is not None:
            _m("Buffer").AddData(b, vec)
        return _m("Buffer").End(b)

    def _tensor(self, b: Any, t: dict[str, Any]) -> int:
        T = self.tfl
        scale = b.CreateNumpyVector(t["scale"].astype(np.float32))
        zp = b.CreateNumpyVector(t["zp"].astype(np.int64))
        _m("QuantizationParameters").Start(b)
        _m("QuantizationParameters").AddScale(b, scale)
        _m("QuantizationParameters").AddZeroPoint(b, zp)
        _m("QuantizationParameters").AddQuantizedDimension(b, t["qdim"])
        quant = _m("QuantizationParameters").End(b)
        shape, name = _ints(b, list(t["shape"])), b.CreateString(t["name"])
        _m("Tensor").Start(b)
        _m("Tensor").AddShape(b, shape)
        _m("Tensor").AddType(b, {"int8": T.TensorType.INT8, "int32": T.TensorType.INT32}[t["dtype"]])
        _m("Tensor").AddBuffer(b, t["buffer"])
        _m("Tensor").AddName(b, name)
        _m("Tensor").AddQuantization(b, quant)
        return _m("Tensor").End(b)

    def _operator(self, b: Any, code_index: int, inputs: list[int], outputs: list[int], opt_type: int,
                  build_options: Any) -> int:
        options = build_options(b) if build_options else None
        ins, outs = _ints(b, inputs), _ints(b, outputs)
        _m("Operator").Start(b)
        _m("Operator").AddOpcodeIndex(b, code_index)
        _m("Operator").AddInputs(b, ins)
        _m("Operator").AddOutputs(b, outs)
        if options is not None:
            _m("Operator").AddBuiltinOptionsType(b, opt_type)
            _m("Operator").AddBuiltinOptions(b, options)
        return _m("Operator").End(b)


def _vector(b: Any, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _ints(b: Any, values: list[int]) -> int:
    return b.CreateNumpyVector(np.asarray(values, np.int32))


def _m(table: str) -> Any:
    """The generated module of a TFLite schema table (its builder functions: Start, Add<Field>, End)."""
    return importlib.import_module(f"tflite.{table}")


def _options(module: Any, name: str, **fields: int) -> Any:
    """A builder callback for a TFLite options table `name` with `fields` (snake_case → AddCamelCase)."""
    def build(b: Any) -> int:
        mod = _m(name)
        mod.Start(b)
        for key, value in fields.items():
            getattr(mod, "Add" + "".join(p.capitalize() for p in key.split("_")))(b, value)
        return mod.End(b)
    return build


_ACT = {"none": 0, "relu": 1, "relu6": 3}  # tflite ActivationFunctionType


def _pad_input(w: _Writer, op: QOp, pad: tuple[int, int, int, int]) -> int:
    """An explicit PAD (with the input zero point, i.e. real 0) where TFLite's SAME rule differs from torch's."""
    T, src = w.tfl, w.g.tensors[op.inputs[0]]
    pt, pl, pb, pr = pad
    shape = (1, src.shape[1] + pt + pb, src.shape[2] + pl + pr, src.shape[3])
    pads = w.tensor(f"{op.name}/paddings", (4, 2), "int32", 1.0, 0,
                    data=np.array([[0, 0], [pt, pb], [pl, pr], [0, 0]], np.int32))
    out = w.tensor(f"{op.name}/padded", shape, "int8", src.scale, src.zero_point)
    w.op(T.BuiltinOperator.PAD, [w.activation(op.inputs[0]), pads], [out],
         (T.BuiltinOptions.PadOptions, _options(T, "PadOptions")))
    return out


def _weights_and_bias(w: _Writer, op: QOp, wq: np.ndarray, qdim: int) -> list[int]:
    s_in = w.g.tensors[op.inputs[0]].scale
    s_w = np.asarray(op.attrs["weight_scales"], np.float32)
    wi = w.tensor(f"{op.name}/weights", wq.shape, "int8", s_w, np.zeros(len(s_w)), qdim, data=wq.astype(np.int8))
    bi = w.tensor(f"{op.name}/bias", (len(s_w),), "int32", s_w.astype(np.float64) * s_in, np.zeros(len(s_w)),
                  0, data=op.consts["bias"].astype(np.int32))
    return [wi, bi]


def _conv(w: _Writer, op: QOp) -> None:
    T, g = w.tfl, w.g
    depthwise = op.kind == "depthwise_conv2d"
    wq = op.consts["weights"]
    k = tuple(wq.shape[:2]) if depthwise else tuple(wq.shape[1:3])
    mode = _same_or_valid(g.tensors[op.inputs[0]], g.tensors[op.output], k, op.attrs["stride"], op.attrs["padding"])
    x = w.activation(op.inputs[0]) if mode else _pad_input(w, op, op.attrs["padding"])
    padding = T.Padding.SAME if mode == "SAME" else T.Padding.VALID
    sh, sw = op.attrs["stride"]
    act = _ACT[op.attrs.get("activation", "none")]
    if depthwise:
        ins = [x, *_weights_and_bias(w, op, wq.reshape(1, *wq.shape), 3)]
        opts = _options(T, "DepthwiseConv2DOptions", padding=padding, stride_w=sw, stride_h=sh, depth_multiplier=1,
                        fused_activation_function=act, dilation_w_factor=1, dilation_h_factor=1)
        w.op(T.BuiltinOperator.DEPTHWISE_CONV_2D, ins, [w.activation(op.output)],
             (T.BuiltinOptions.DepthwiseConv2DOptions, opts))
        return
    opts = _options(T, "Conv2DOptions", padding=padding, stride_w=sw, stride_h=sh, fused_activation_function=act,
                    dilation_w_factor=1, dilation_h_factor=1)
    w.op(T.BuiltinOperator.CONV_2D, [x, *_weights_and_bias(w, op, wq, 0)], [w.activation(op.output)],
         (T.BuiltinOptions.Conv2DOptions, opts))


def _fully_connected(w: _Writer, op: QOp) -> None:
    T = w.tfl
    opts = _options(T, "FullyConnectedOptions", fused_activation_function=_ACT[op.attrs.get("activation", "none")])
    w.op(T.BuiltinOperator.FULLY_CONNECTED, [w.activation(op.inputs[0]), *_weights_and_bias(w, op, op.consts[
        "weights"], 0)], [w.activation(op.output)], (T.BuiltinOptions.FullyConnectedOptions, opts))


def _add(w: _Writer, op: QOp) -> None:
    T = w.tfl
    opts = _options(T, "AddOptions", fused_activation_function=_ACT[op.attrs.get("activation", "none")])
    w.op(T.BuiltinOperator.ADD, [w.activation(t) for t in op.inputs], [w.activation(op.output)],
         (T.BuiltinOptions.AddOptions, opts))


def _pool(w: _Writer, op: QOp) -> None:
    T, g = w.tfl, w.g
    kh, kw = op.attrs["kernel"]
    mode = _same_or_valid(g.tensors[op.inputs[0]], g.tensors[op.output], (kh, kw), op.attrs["stride"],
                          op.attrs["padding"])
    if mode is None:
        raise UnsupportedOpError(f"op {op.name!r} ({op.kind}): padding {op.attrs['padding']} is neither TFLite "
                                 "SAME nor VALID, which .tflite pooling needs")
    opts = _options(T, "Pool2DOptions", padding=T.Padding.SAME if mode == "SAME" else T.Padding.VALID,
                    stride_w=op.attrs["stride"][1], stride_h=op.attrs["stride"][0], filter_width=kw, filter_height=kh)
    code = T.BuiltinOperator.AVERAGE_POOL_2D if op.kind == "avg_pool2d" else T.BuiltinOperator.MAX_POOL_2D
    w.op(code, [w.activation(op.inputs[0])], [w.activation(op.output)], (T.BuiltinOptions.Pool2DOptions, opts))


def _reshape(w: _Writer, op: QOp) -> None:
    T = w.tfl
    shape = list(w.g.tensors[op.output].shape)

    def opts(b: Any) -> int:
        vec = _ints(b, shape)
        _m("ReshapeOptions").Start(b)
        _m("ReshapeOptions").AddNewShape(b, vec)
        return _m("ReshapeOptions").End(b)
    w.op(T.BuiltinOperator.RESHAPE, [w.activation(op.inputs[0])], [w.activation(op.output)],
         (T.BuiltinOptions.ReshapeOptions, opts))


def _conv_add(w: _Writer, op: QOp) -> None:
    """TFLite has no fused conv + add: a fused op is written as its CONV_2D / DEPTHWISE_CONV_2D and ADD."""
    conv, add = split_conv_add(op)
    _conv(w, conv)
    _add(w, add)


TFLITE_WRITERS: Registry[Any] = Registry(".tflite op writer")
for _kind, _fn in (("conv2d", _conv), ("depthwise_conv2d", _conv), ("fully_connected", _fully_connected),
                   ("add", _add), ("avg_pool2d", _pool), ("max_pool2d", _pool), ("reshape", _reshape),
                   *((k, _conv_add) for k in CONV_ADD_KINDS.values())):
    TFLITE_WRITERS.add(_kind, _fn)


def tflite_bytes(graph: QGraph) -> bytes:
    """The graph as a .tflite flatbuffer (schema version 3, int8 tensors, per-channel int8 weights with
    quantized_dimension 0, or 3 for depthwise, int32 bias). Raises `UnsupportedOpError` for ops it cannot write."""
    w = _Writer(graph)
    x = w.activation(graph.input)
    for op in graph.ops:
        if op.kind not in TFLITE_WRITERS:
            raise UnsupportedOpError(f"op {op.name!r}: no .tflite writer for {op.kind!r}; supported: "
                                     f"{', '.join(TFLITE_WRITERS.names())}")
        TFLITE_WRITERS.get(op.kind)(w, op)
    return w.serialize([x], [w.activation(graph.output)])


def _interpreter(model: bytes, arena_size: int) -> Any:
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError as e:
        raise DevicefitError("running .tflite needs the `tflite-micro` package: pip install tflite-micro") from e
    return runtime.Interpreter.from_bytes(model, arena_size=arena_size)


def tflm_run(model: bytes, xq: np.ndarray, arena_size: int = 1 << 22) -> np.ndarray:
    """Run a .tflite model in TFLM's Python interpreter on int8 inputs (N, ...) → int8 outputs (N, ...)."""
    interp = _interpreter(model, arena_size)
    outs = []
    for x in np.asarray(xq, np.int8):
        interp.set_input(x[None], 0)
        interp.invoke()
        outs.append(np.array(interp.get_output(0)).reshape(-1))
    return np.stack(outs)


@contextlib.contextmanager
def _captured_fds() -> Iterator[list[str]]:
    """Capture what C++ code writes to file descriptors 1 and 2 (TFLM logs there, not to Python's streams)."""
    text: list[str] = []
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield text
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            f.seek(0)
            text.append(f.read().decode(errors="replace"))


def tflm_arena(model: bytes, x: np.ndarray, high: int = 1 << 22) -> dict[str, Any]:
    """The tensor arena TFLM needs for `model` on this host. `arena_bytes`: the total its RecordingMicroAllocator
    reports after an invoke with a `high`-byte arena, confirmed by allocating and invoking again with exactly
    that arena_size; `head_bytes` (tensor buffers, planned by TFLM's greedy planner) and `tail_bytes`
    (persistent: tensor structs, per-channel quantization data). Host structs hold 8-byte pointers, so the tail
    is larger than on a 32-bit MCU. (Probing much smaller arenas can crash the TFLM Python build, so we don't.)"""
    def run(size: int) -> Any:
        interp = _interpreter(model, size)
        interp.set_input(np.asarray(x, np.int8)[None], 0)
        interp.invoke()
        return interp
    with _captured_fds() as log:
        try:
            run(high).print_allocations()
        except (RuntimeError, ValueError) as e:
            raise ConfigError(f"TFLM could not run the model even with a {high}-byte arena: {e}") from e
    found = {k: int(v) for k, v in re.findall(r"Arena allocation (total|head|tail) (\d+) bytes", log[0])}
    if "total" not in found:
        raise DevicefitError(f"tflite-micro printed no arena totals; its log: {log[0][-1000:]}")
    with _captured_fds():
        run(found["total"])  # raises when the reported total is not enough
    return {"arena_bytes": found["total"], "head_bytes": found.get("head", -1), "tail_bytes": found.get("tail", -1),
            "method": TFLM_ARENA_METHOD}
