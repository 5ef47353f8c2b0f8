"""ONNX QDQ writer: uint8 activations (asymmetric, per tensor) and int8 weights (symmetric, per output channel
or per tensor), int32 biases — the U8S8 layout that ONNX Runtime fuses into QLinearConv / QGemm / QLinearAdd.

Activations (Relu, and Clip with min 0) that follow a Conv/Gemm/Add are removed and their effect moved into
the range of the producer's QuantizeLinear (the range starts at 0), as ONNX Runtime's own quantizer does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from devicefit.core import ConfigError, DataError

__all__ = ["QUANT_NODE_TYPES", "fuse_activations", "quantizable_tensors", "weight_scales", "write_qdq"]

QUANT_NODE_TYPES = frozenset({"Conv", "Gemm", "MatMul", "Add", "GlobalAveragePool", "AveragePool", "MaxPool",
                              "Concat"})
_WEIGHTED = {"Conv", "Gemm", "MatMul"}
_ACT_PRODUCERS = {"Conv", "Gemm", "Add"}


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for name in n.input:
            out.setdefault(name, []).append(n)
    return out


def _constant_value(graph: onnx.GraphProto, name: str) -> float | None:
    for init in graph.initializer:
        if init.name == name:
            return float(numpy_helper.to_array(init).reshape(-1)[0])
    for n in graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            return float(numpy_helper.to_array(n.attribute[0].t).reshape(-1)[0])
    return None


def _is_fusable_act(graph: onnx.GraphProto, node: onnx.NodeProto) -> bool:
    if node.op_type == "Relu":
        return True
    if node.op_type == "Clip" and len(node.input) >= 2 and node.input[1]:
        return _constant_value(graph, node.input[1]) == 0.0
    return False


def fuse_activations(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` where each Relu / Clip(min=0) whose input comes only from a Conv/Gemm/Add is removed
    and the producer writes the activation's output name instead (calibrate on the original graph: the
    range of that name is then the post-activation range, which the uint8 QuantizeLinear reproduces)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    producers = {o: n for n in g.node for o in n.output}
    consumers = _consumers(g)
    graph_outputs = {o.name for o in g.output}
    drop = []
    for act in g.node:
        src = producers.get(act.input[0]) if act.input else None
        if src is None or src.op_type not in _ACT_PRODUCERS or not _is_fusable_act(g, act):
            continue
        if len(consumers.get(act.input[0], [])) != 1 or act.input[0] in graph_outputs:
            continue
        src.output[0] = act.output[0]
        drop.append(act)
    for act in drop:
        g.node.remove(act)
    return m


def quantizable_tensors(model: onnx.ModelProto) -> list[str]:
    """Float activation tensors that get a QuantizeLinear/DequantizeLinear pair: the inputs and outputs of
    every node in `QUANT_NODE_TYPES`, in graph order. Initializers are excluded, and so are graph outputs,
    except a Conv's: ONNX Runtime fuses a Conv into QLinearConv only when a QuantizeLinear follows it (a
    Gemm/MatMul writing a float output still runs in int8), so an unquantized last Conv would run in fp32 on
    weights dequantized at every run."""
    g = model.graph
    inits = {i.name for i in g.initializer}
    outputs = {o.name for o in g.output}
    seen: dict[str, None] = {}
    for n in g.node:
        if n.op_type not in QUANT_NODE_TYPES:
            continue
        names = list(n.input[:1]) if n.op_type in _WEIGHTED else list(n.input)
        for name in [*names, *n.output]:
            if name and name not in inits and (name not in outputs or (n.op_type == "Conv" and name in n.output)):
                seen.setdefault(name, None)
    return list(seen)


def _act_params(low: float, high: float) -> tuple[float, int]:
    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / 255.0 if high > low else 1.0
    zp = int(np.clip(round(-low / scale), 0, 255))
    return scale, zp


def weight_scales(w: np.ndarray, axis: int, per_channel: bool, qmax: int = 127) -> np.ndarray:
    """Symmetric scales max|w|/qmax: one per slice along `axis` (per channel) or one (shape ()) per tensor.
    The same formula as `devicefit.compress.bias_correct_`, so bias correction matches what is deployed."""
    if not per_channel:
        return np.asarray(max(float(np.abs(w).max()), 1e-12 * qmax) / qmax, dtype=np.float32)
    moved = np.moveaxis(np.abs(w), axis, 0).reshape(w.shape[axis], -1)
    return np.maximum(moved.max(axis=1), 1e-12 * qmax).astype(np.float32) / qmax


class _Writer:
    """Accumulates new initializers and nodes; rewires consumers to the dequantized names."""

    def __init__(self, model: onnx.ModelProto, per_channel: bool, qmax: int) -> None:
        self.m, self.per_channel, self.qmax = model, per_channel, qmax
        self.g = model.graph
        self.inits = {i.name: i for i in self.g.initializer}
        self.new_nodes: list[tuple[int, onnx.NodeProto]] = []
        self.act_scale: dict[str, float] = {}

    def add_init(self, name: str, arr: np.ndarray) -> str:
        t = numpy_helper.from_array(arr, name)
        self.g.initializer.append(t)
        self.inits[name] = t
        return name

    def quantize_activation(self, name: str, low: float, high: float, position: int) -> str:
        scale, zp = _act_params(low, high)
        self.act_scale[name] = scale
        s = self.add_init(f"{name}_scale", np.asarray(scale, dtype=np.float32))
        z = self.add_init(f"{name}_zp", np.asarray(zp, dtype=np.uint8))
        self.new_nodes.append((position, helper.make_node("QuantizeLinear", [name, s, z], [f"{name}_q"],
                                                          name=f"{name}_Q")))
        self.new_nodes.append((position, helper.make_node("DequantizeLinear", [f"{name}_q", s, z],
                                                          [f"{name}_dq"], name=f"{name}_DQ")))
        return f"{name}_dq"

    def quantize_weight(self, node: onnx.NodeProto, position: int) -> np.ndarray:
        w_name = node.input[1]
        w = numpy_helper.to_array(self.inits[w_name]).astype(np.float32)
        axis = _weight_axis(node)
        scale = weight_scales(w, axis, self.per_channel, self.qmax)
        shape = [1] * w.ndim
        shape[axis] = -1
        q = np.clip(np.round(w / (scale.reshape(shape) if scale.ndim else scale)), -self.qmax, self.qmax)
        q_name = self.add_init(f"{w_name}_quantized", q.astype(np.int8))
        s = self.add_init(f"{w_name}_scale", scale)
        z = self.add_init(f"{w_name}_zp", np.zeros(scale.shape, dtype=np.int8))
        attrs = {"axis": axis} if scale.ndim else {}
        self.new_nodes.append((position, helper.make_node("DequantizeLinear", [q_name, s, z], [f"{w_name}_dq"],
                                                          name=f"{w_name}_DQ", **attrs)))
        node.input[1] = f"{w_name}_dq"
        return scale

    def quantize_bias(self, node: onnx.NodeProto, w_scale: np.ndarray, in_scale: float, position: int) -> None:
        b_name = node.input[2]
        b = numpy_helper.to_array(self.inits[b_name]).astype(np.float64)
        scale = (in_scale * w_scale.astype(np.float64)).astype(np.float32)
        q = np.clip(np.round(b / scale), -(2 ** 31), 2 ** 31 - 1).astype(np.int32)
        q_name = self.add_init(f"{b_name}_quantized", q)
        s = self.add_init(f"{b_name}_scale", scale)
        z = self.add_init(f"{b_name}_zp", np.zeros(scale.shape, dtype=np.int32))
        attrs = {"axis": 0} if scale.ndim else {}
        self.new_nodes.append((position, helper.make_node("DequantizeLinear", [q_name, s, z], [f"{b_name}_dq"],
                                                          name=f"{b_name}_DQ", **attrs)))
        node.input[2] = f"{b_name}_dq"


def _weight_axis(node: onnx.NodeProto) -> int:
    """Output-channel axis of the weight: Conv (O, I, kh, kw) → 0; Gemm transB=1 (N, K) → 0; MatMul (K, N) → 1."""
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return 1 if node.op_type == "MatMul" else 0


def _check_ranges(names: Iterable[str], ranges: Mapping[str, tuple[float, float]]) -> None:
    missing = [n for n in names if n not in ranges]
    if missing:
        raise DataError(f"no calibrated range for tensor(s) {missing[:5]} (of {len(missing)}); calibrate the "
                        "same fp32 graph that is being quantized")


def write_qdq(model: onnx.ModelProto, ranges: Mapping[str, tuple[float, float]], *, per_channel: bool = True,
              weight_bits: int = 8) -> onnx.ModelProto:
    """A QDQ copy of `model` (activations already fused by `fuse_activations`): every tensor from
    `quantizable_tensors` gets Q/DQ with uint8 params from `ranges[name] = (low, high)`; Conv/Gemm/MatMul
    weight initializers become int8 (symmetric, range ±(2^(bits-1) - 1)) behind a DequantizeLinear, and
    their biases int32 with scale = input scale × weight scale. `weight_bits` in 2..8 (stored as int8)."""
    if not isinstance(weight_bits, int) or not 2 <= weight_bits <= 8:
        raise ConfigError(f"weight_bits must be an int in 2..8 (stored in int8 for ONNX Runtime), got {weight_bits!r}")
    names = quantizable_tensors(model)
    _check_ranges(names, ranges)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    w = _Writer(out, per_channel, 2 ** (weight_bits - 1) - 1)
    _insert_activation_qdq(w, names, ranges)
    _insert_weight_qdq(w)
    nodes = list(out.graph.node)
    for pos, node in sorted(w.new_nodes, key=lambda t: t[0], reverse=True):
        nodes.insert(pos, node)
    del out.graph.node[:]
    out.graph.node.extend(_toposort(nodes, out.graph))
    _drop_unused_initializers(out.graph)
    onnx.checker.check_model(out)
    return out


def _insert_activation_qdq(w: _Writer, names: list[str], ranges: Mapping[str, tuple[float, float]]) -> None:
    consumers = _consumers(w.g)
    outputs = {o.name for o in w.g.output}
    for name in names:
        dq = w.quantize_activation(name, *ranges[name], position=0)
        for node in consumers.get(name, []):
            for i, inp in enumerate(node.input):
                if inp == name:
                    node.input[i] = dq
        if name in outputs:  # a graph output keeps its name: the producer writes `<name>_float`, Q/DQ follow
            _rename_tensor(w, name, f"{name}_float", dq)


def _rename_tensor(w: _Writer, name: str, new: str, dq: str) -> None:
    """Graph output `name` (Q/DQ already inserted): its producer and QuantizeLinear use `new`, and the
    DequantizeLinear writes `name` (instead of `dq`), so the model's output names stay as they were; nodes
    that also read the tensor read that dequantized `name`."""
    for node in w.g.node:
        node.output[:] = [new if o == name else o for o in node.output]
        node.input[:] = [name if i == dq else i for i in node.input]
    for _, node in w.new_nodes:
        node.input[:] = [new if i == name else i for i in node.input]
        node.output[:] = [name if o == dq else o for o in node.output]


def _insert_weight_qdq(w: _Writer) -> None:
    for node in list(w.g.node):
        if node.op_type not in _WEIGHTED or len(node.input) < 2 or node.input[1] not in w.inits:
            continue
        w_scale = w.quantize_weight(node, position=0)
        src = node.input[0][:-3] if node.input[0].endswith("_dq") else None
        if len(node.input) > 2 and node.input[2] in w.inits and src in w.act_scale:
            w.quantize_bias(node, w_scale, w.act_scale[src], position=0)


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    """Remove the float weights and biases that their int8/int32 copies replaced."""
    used = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def _toposort(nodes: list[onnx.NodeProto], graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(nodes), []
    while pending:
        progressed = False
        for n in list(pending):
            if all(i in ready for i in n.input):
                ordered.append(n)
                ready.update(n.output)
                pending.remove(n)
                progressed = True
        if not progressed:
            raise DataError(f"QDQ graph has a cycle or a dangling input at node {pending[0].name!r} "
                            f"(inputs {list(pending[0].input)})")
    return ordered


