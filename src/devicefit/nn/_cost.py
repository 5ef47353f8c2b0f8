"""Analytic cost of a network at batch 1: parameters, MACs, weight bytes and peak activation memory.

Peak memory comes from a liveness pass over the torch.fx graph in execution order (see `analyze`).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from devicefit.core import ConfigError, UnsupportedOpError

__all__ = ["CostReport", "LayerCost", "analyze", "tensor_metas"]


@dataclass(frozen=True)
class LayerCost:
    """One graph node: `output_shape` includes the batch dim of 1 (first output for multi-output nodes);
    `output_bytes` at `act_bits`; `allocates` is False for aliases and in-place/fused nodes; `live_bytes`: the
    activation buffers live while the node executes (the report's peak is their maximum); `scope`: the path of
    the innermost module the node runs in ("" at the top level), e.g. "features.3" for a residual add."""

    name: str
    op: str
    output_shape: tuple[int, ...]
    params: int
    macs: int
    output_bytes: int
    allocates: bool
    live_bytes: int = 0
    scope: str = ""


@dataclass(frozen=True)
class CostReport:
    """Cost of one network for one input shape (C, H, W) at batch 1.

    `macs`: multiply-accumulates of convs and linears (BN and activations fold: 0).
    `param_bytes`: all parameters at `weight_bits`; `param_bytes_fp32`: at 32 bits.
    `peak_activation_bytes`: the largest sum of simultaneously live activation buffers at `act_bits`,
    reached while executing `peak_node`; `peak_tensors` names the nodes that allocated those buffers.
    """

    params: int
    macs: int
    param_bytes: int
    param_bytes_fp32: int
    peak_activation_bytes: int
    peak_node: str
    peak_tensors: tuple[str, ...]
    layers: tuple[LayerCost, ...]
    input_shape: tuple[int, ...]
    weight_bits: int
    act_bits: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = [asdict(layer) for layer in self.layers]
        return d


# --- op classes -------------------------------------------------------------------------------------------

_ALIAS_MODULES = (nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout)
_ALIAS_FUNCTIONS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.chunk, torch.split,
                    operator.getitem}
_ALIAS_METHODS = {"view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "chunk", "split",
                  "contiguous", "view_as", "reshape_as"}
_UNARY_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid)
_UNARY_FUNCTIONS = {F.relu, F.relu6, F.hardswish, F.hardsigmoid, torch.relu, torch.sigmoid, F.batch_norm}
_UNARY_METHODS = {"relu", "relu_", "sigmoid", "hardswish"}
_ELEMENTWISE_FUNCTIONS = {operator.add, operator.iadd, operator.mul, operator.imul, torch.add, torch.mul}
_ELEMENTWISE_METHODS = {"add", "add_", "mul", "mul_"}


def _conv_macs(m: nn.Module, out_shape: Sequence[int]) -> int:
    # C_out·H_out·W_out · (C_in/groups)·k_h·k_w; the weight holds (C_out, C_in/groups, k_h, k_w).
    assert isinstance(m, nn.Conv1d | nn.Conv2d)
    return math.prod(out_shape[1:]) * math.prod(m.weight.shape[1:])


def _linear_macs(m: nn.Module, out_shape: Sequence[int]) -> int:
    assert isinstance(m, nn.Linear)
    return math.prod(out_shape[1:]) * m.in_features  # in · out per leading position


_MAC_RULES: dict[type[nn.Module], Callable[[nn.Module, Sequence[int]], int]] = {
    nn.Conv1d: _conv_macs,
    nn.Conv2d: _conv_macs,
    nn.Linear: _linear_macs,
}


def _node_class(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    """One of input, output, const, alias, unary (fusable/in-place), elementwise, compute."""
    if node.op in ("placeholder", "output"):
        return "input" if node.op == "placeholder" else "output"
    if node.op == "get_attr":
        return "const"
    if node.op == "call_module":
        m = modules[str(node.target)]
        return "alias" if isinstance(m, _ALIAS_MODULES) else "unary" if isinstance(m, _UNARY_MODULES) else "compute"
    if node.op == "call_method":
        table = ((_ALIAS_METHODS, "alias"), (_UNARY_METHODS, "unary"), (_ELEMENTWISE_METHODS, "elementwise"))
    else:
        table = ((_ALIAS_FUNCTIONS, "alias"), (_UNARY_FUNCTIONS, "unary"), (_ELEMENTWISE_FUNCTIONS, "elementwise"))
    return next((kind for ops, kind in table if node.target in ops), "compute")


def _op_name(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return type(modules[str(node.target)]).__name__
    return node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))


# --- tensor sizes -----------------------------------------------------------------------------------------


def tensor_metas(node: fx.Node) -> list[TensorMetadata]:
    """The tensor outputs of `node` (empty for non-tensor values such as `x.size(0)`)."""
    meta = node.meta.get("tensor_meta")
    if isinstance(meta, TensorMetadata):
        return [meta]
    if isinstance(meta, list | tuple):
        return [m for m in meta if isinstance(m, TensorMetadata)]
    return []


def _nbytes(numel: int, bits: int) -> int:
    return (numel * bits + 7) // 8


def _out_bytes(node: fx.Node, act_bits: int) -> int:
    return sum(_nbytes(math.prod(m.shape), act_bits) for m in tensor_metas(node))


# --- liveness ---------------------------------------------------------------------------------------------


@dataclass
class _Buffer:
    owner: str  # the node that allocated it
    nbytes: int
    start: int  # step at which it is written
    end: int  # last step that reads it (through any alias or in-place successor)


class _Liveness:
    """Assigns each tensor-valued node a buffer in execution order (fresh, alias or in-place reuse)."""

    def __init__(self, nodes: list[fx.Node], act_bits: int) -> None:
        self.step = {n: i for i, n in enumerate(nodes)}
        self.last_use = {n: max((self.step[u] for u in n.users), default=self.step[n]) for n in nodes}
        self.act_bits = act_bits
        self.buffers: list[_Buffer] = []
        self.of: dict[fx.Node, _Buffer] = {}

    def fresh(self, node: fx.Node) -> None:
        buf = _Buffer(node.name, _out_bytes(node, self.act_bits), self.step[node], self.last_use[node])
        self.buffers.append(buf)
        self.of[node] = buf

    def share(self, node: fx.Node, buf: _Buffer) -> None:
        self.of[node] = buf
        buf.end = max(buf.end, self.last_use[node])

    def dying_operand(self, node: fx.Node, nbytes: int) -> _Buffer | None:
        """A buffer of `nbytes` read by `node` whose last reader is `node`, else None."""
        for arg in node.all_input_nodes:
            buf = self.of.get(arg)
            if buf is not None and buf.end == self.step[node] and buf.nbytes == nbytes:
                return buf
        return None

    def assign(self, node: fx.Node, kind: str) -> bool:
        """Give `node` a buffer; True when that meant a new allocation."""
        first = node.all_input_nodes[0] if node.all_input_nodes else None
        if kind == "alias" and first in self.of:
            self.share(node, self.of[first])
            return False
        reuse = None
        if kind == "unary" and first in self.of and self.of[first].end == self.step[node]:
            reuse = self.of[first]
        elif kind == "elementwise":
            reuse = self.dying_operand(node, _out_bytes(node, self.act_bits))
        if reuse is not None:
            self.share(node, reuse)
            return False
        self.fresh(node)
        return True

    def live_bytes(self, node: fx.Node) -> int:
        """Bytes of the buffers live while `node` executes."""
        t = self.step[node]
        return sum(b.nbytes for b in self.buffers if b.start <= t <= b.end)

    def peak(self, names: list[str]) -> tuple[int, str, tuple[str, ...]]:
        """(peak bytes, node executing at the peak, owners of the buffers live then)."""
        best = (-1, "", ())
        for t, name in enumerate(names):
            live = [b for b in self.buffers if b.start <= t <= b.end]
            total = sum(b.nbytes for b in live)
            if total > best[0]:
                best = (total, name, tuple(b.owner for b in live))
        return best[0], best[1], best[2]


# --- public entry -----------------------------------------------------------------------------------------


def check_input_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    """`input_shape` (no batch dim) as a tuple of positive ints, else `ConfigError`."""
    shape = tuple(input_shape) if isinstance(input_shape, Sequence) and not isinstance(input_shape, str) else ()
    if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise ConfigError(f"input_shape must be a non-empty sequence of positive ints (no batch dim), got "
                          f"{input_shape!r}")
    return shape


def example_input(model: nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    """Zeros of (1, *shape) on the model's device, in its floating dtype (float32 if it has none)."""
    p = next(model.parameters(), None)
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    return torch.zeros(1, *shape, device=p.device if p is not None else "cpu", dtype=dtype)


def _check_bits(weight_bits: int, act_bits: int) -> None:
    for name, bits in (("weight_bits", weight_bits), ("act_bits", act_bits)):
        if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 32:
            raise ConfigError(f"{name} must be an int in [1, 32], got {bits!r}")


def _trace(model: nn.Module, shape: tuple[int, ...]) -> fx.GraphModule:
    try:
        gm = fx.symbolic_trace(model)
    except Exception as e:  # fx raises many types on dynamic control flow
        raise UnsupportedOpError(f"cannot trace {type(model).__name__} with torch.fx: {e}") from e
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(example_input(model, shape))
    finally:
        model.train(was_training)
    return gm


def _layer(node: fx.Node, modules: dict[str, nn.Module], act_bits: int, allocates: bool) -> LayerCost:
    metas = tensor_metas(node)
    shape = tuple(int(d) for d in metas[0].shape) if metas else ()
    params = macs = 0
    if node.op == "call_module":
        m = modules[str(node.target)]
        params = sum(p.numel() for p in m.parameters())
        rule = _MAC_RULES.get(type(m))
        macs = rule(m, shape) if rule and shape else 0
    return LayerCost(node.name, _op_name(node, modules), shape, params, macs, _out_bytes(node, act_bits), allocates)


def _scope(node: fx.Node) -> str:
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}  # {key: (module path, module type)}, outermost first
    return str(next(reversed(stack.values()))[0]) if stack else ""


def analyze(model: nn.Module, input_shape: Sequence[int], *, weight_bits: int = 8, act_bits: int = 8) -> CostReport:
    """Trace `model` with torch.fx on a (1, *input_shape) input and return its `CostReport`.

    Liveness: each node's output is a buffer allocated when produced and freed after its last reader.
    Reshape/flatten/view/chunk/getitem are aliases (no buffer). BN and activations whose input buffer
    dies there are fused/in-place, and so is an add/mul into an operand of the output's size that dies
    there. The graph input counts as a live buffer; parameters do not.
    """
    _check_bits(weight_bits, act_bits)
    shape = check_input_shape(input_shape)
    gm = _trace(model, shape)
    modules = dict(gm.named_modules())
    nodes = list(gm.graph.nodes)
    live = _Liveness(nodes, act_bits)
    costed = []
    for node in nodes:
        kind = _node_class(node, modules)
        if kind in ("output", "const") or not tensor_metas(node):
            continue
        allocates = live.assign(node, kind)
        if kind != "input":
            costed.append((node, _layer(node, modules, act_bits, allocates)))
    layers = [replace(layer, live_bytes=live.live_bytes(node), scope=_scope(node)) for node, layer in costed]
    peak, peak_node, peak_tensors = live.peak([n.name for n in nodes])
    params = sum(p.numel() for p in model.parameters())
    return CostReport(
        params=params,
        macs=sum(layer.macs for layer in layers),
        param_bytes=_nbytes(params, weight_bits),
        param_bytes_fp32=params * 4,
        peak_activation_bytes=peak,
        peak_node=peak_node,
        peak_tensors=peak_tensors,
        layers=tuple(layers),
        input_shape=shape,
        weight_bits=weight_bits,
        act_bits=act_bits,
    )
