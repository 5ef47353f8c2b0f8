"""torch.fx graph → fused float ops: BatchNorm folded into its conv, ReLU/ReLU6 fused into the producing op.

One registered rule per module class / function / method (`FUSION_RULES`); a node without a rule raises
`UnsupportedOpError` naming the node and listing the supported ops.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from devicefit.core import Registry, UnsupportedOpError

__all__ = ["FUSION_RULES", "FloatOp", "FuseContext", "fuse_graph"]

ACT_FUSABLE = ("conv2d", "depthwise_conv2d", "fully_connected", "add")


@dataclass
class FloatOp:
    """A fused float op: `out_node` is the fx node whose value is the op's output (after BN and activation)."""

    kind: str
    name: str
    inputs: list[str]
    out_node: str
    params: dict[str, Any] = field(default_factory=dict)
    act: str = "none"


@dataclass
class FuseContext:
    """Fusion state: the ops so far, which op produces each value, and fx aliases (Identity, Dropout)."""

    gm: fx.GraphModule
    shapes: dict[str, tuple[int, ...]]
    ops: list[FloatOp] = field(default_factory=list)
    producer: dict[str, FloatOp] = field(default_factory=dict)
    alias: dict[str, str] = field(default_factory=dict)

    def value(self, arg: Any) -> str:
        if not isinstance(arg, fx.Node):
            raise UnsupportedOpError(f"expected a tensor argument, got constant {arg!r}")
        return self.alias.get(arg.name, arg.name)

    def add(self, op: FloatOp) -> None:
        self.ops.append(op)
        self.producer[op.out_node] = op

    def fusable_producer(self, node: fx.Node, kinds: tuple[str, ...]) -> FloatOp | None:
        """The op producing `node`'s first argument when `node` is its only user and its kind is in `kinds`."""
        src = node.args[0]
        op = self.producer.get(self.value(src))
        if op is None or op.kind not in kinds or op.act != "none" or len(src.users) != 1:
            return None
        return op

    def retarget(self, op: FloatOp, node: fx.Node) -> None:
        del self.producer[op.out_node]
        op.out_node = node.name
        self.producer[node.name] = op


Rule = Callable[[FuseContext, fx.Node, Any], None]
FUSION_RULES: Registry[Rule] = Registry("fusion rule")


def _rule_key(node: fx.Node, gm: fx.GraphModule) -> tuple[str, Any]:
    if node.op == "call_module":
        mod = gm.get_submodule(str(node.target))
        return f"module:{type(mod).__name__}", mod
    if node.op == "call_function":
        return f"function:{getattr(node.target, '__name__', str(node.target))}", node.target
    if node.op == "call_method":
        return f"method:{node.target}", node.target
    return node.op, None


def fuse_graph(model: nn.Module, example: torch.Tensor) -> tuple[list[FloatOp], str, str, dict[str, tuple[int, ...]]]:
    """Trace `model` (eval mode), propagate shapes with `example` (1, C, H, W) and fuse.

    Returns (ops, input node name, output value name, node shapes).
    """
    from torch.fx.passes.shape_prop import ShapeProp

    gm = fx.symbolic_trace(model)
    ShapeProp(gm).propagate(example)
    shapes = {n.name: tuple(n.meta["tensor_meta"].shape) for n in gm.graph.nodes if "tensor_meta" in n.meta}
    ctx = FuseContext(gm, shapes)
    inputs = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        raise UnsupportedOpError(f"the model must take exactly one tensor input, got {len(inputs)}")
    output = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            continue
        if node.op == "output":
            output = ctx.value(node.args[0])
            continue
        key, target = _rule_key(node, gm)
        if key not in FUSION_RULES:
            raise UnsupportedOpError(f"node {node.name!r} ({key}) has no int8 conversion rule; supported: "
                                     f"{', '.join(FUSION_RULES.names())}")
        FUSION_RULES.get(key)(ctx, node, target)
    assert output is not None
    return ctx.ops, inputs[0].name, output, shapes


def _unsupported(node: fx.Node, why: str) -> UnsupportedOpError:
    return UnsupportedOpError(f"node {node.name!r} ({node.target}): {why}")


@FUSION_RULES.register("module:Conv2d")
def _conv(ctx: FuseContext, node: fx.Node, m: nn.Conv2d) -> None:
    if m.dilation != (1, 1) or m.padding_mode != "zeros" or isinstance(m.padding, str):
        raise _unsupported(node, f"conv2d needs dilation 1, zero padding given as ints; got dilation "
                                 f"{m.dilation}, padding {m.padding!r}, padding_mode {m.padding_mode!r}")
    if m.groups == 1:
        kind = "conv2d"
    elif m.groups == m.in_channels == m.out_channels:
        kind = "depthwise_conv2d"
    else:
        raise _unsupported(node, f"grouped conv with groups={m.groups} (in {m.in_channels}, out "
                                 f"{m.out_channels}); supported: groups=1 or depthwise (groups = in = out)")
    w = m.weight.detach().double()
    b = m.bias.detach().double() if m.bias is not None else torch.zeros(m.out_channels, dtype=torch.float64)
    ph, pw = m.padding
    params = {"weight": w, "bias": b, "stride": tuple(m.stride), "padding": (ph, pw, ph, pw)}
    ctx.add(FloatOp(kind, node.name, [ctx.value(node.args[0])], node.name, params))


@FUSION_RULES.register("module:BatchNorm2d")
def _batchnorm(ctx: FuseContext, node: fx.Node, m: nn.BatchNorm2d) -> None:
    op = ctx.fusable_producer(node, ("conv2d", "depthwise_conv2d"))
    if op is None or m.running_mean is None:
        raise _unsupported(node, "BatchNorm2d must directly follow a conv whose only user it is (it is folded)")
    k = (m.weight.detach().double() if m.affine else 1.0) / torch.sqrt(m.running_var.double() + m.eps)
    beta = m.bias.detach().double() if m.affine else 0.0
    op.params["weight"] = op.params["weight"] * k.reshape(-1, 1, 1, 1)
    op.params["bias"] = (op.params["bias"] - m.running_mean.double()) * k + beta
    ctx.retarget(op, node)


def _fuse_act(act: str) -> Rule:
    def rule(ctx: FuseContext, node: fx.Node, target: Any) -> None:
        if isinstance(target, nn.Hardtanh) and not isinstance(target, nn.ReLU6) and \
                (target.min_val, target.max_val) != (0.0, 6.0):
            raise _unsupported(node, f"Hardtanh({target.min_val}, {target.max_val}); only ReLU6 = Hardtanh(0, 6)")
        op = ctx.fusable_producer(node, ACT_FUSABLE)
        if op is None:
            raise _unsupported(node, f"{act} must directly follow one of {', '.join(ACT_FUSABLE)} whose only "
                                     "user it is (it is fused into that op)")
        op.act = act
        ctx.retarget(op, node)
    return rule


for _key in ("module:ReLU", "function:relu", "method:relu"):
    FUSION_RULES.add(_key, _fuse_act("relu"))
for _key in ("module:ReLU6", "function:relu6"):
    FUSION_RULES.add(_key, _fuse_act("relu6"))


def _alias(ctx: FuseContext, node: fx.Node, target: Any) -> None:
    ctx.alias[node.name] = ctx.value(node.args[0])


for _key in ("module:Identity", "module:Dropout"):
    FUSION_RULES.add(_key, _alias)


def _add(ctx: FuseContext, node: fx.Node, target: Any) -> None:
    if len(node.args) != 2 or node.kwargs:
        raise _unsupported(node, "add takes exactly two tensors (no alpha, no out)")
    a, b = (ctx.value(x) for x in node.args)
    if ctx.shapes[a] != ctx.shapes[b]:
        raise _unsupported(node, f"add needs equal shapes (no broadcasting), got {ctx.shapes[a]} and {ctx.shapes[b]}")
    ctx.add(FloatOp("add", node.name, [a, b], node.name))


for _key in ("function:add", "function:iadd", "method:add"):  # operator.add, x += y, torch.add
    FUSION_RULES.add(_key, _add)


@FUSION_RULES.register("module:AdaptiveAvgPool2d")
def _global_pool(ctx: FuseContext, node: fx.Node, m: nn.AdaptiveAvgPool2d) -> None:
    if m.output_size not in (1, (1, 1)):
        raise _unsupported(node, f"AdaptiveAvgPool2d output_size must be 1, got {m.output_size!r}")
    x = ctx.value(node.args[0])
    _, _, h, w = ctx.shapes[x]
    params = {"kernel": (h, w), "stride": (1, 1), "padding": (0, 0, 0, 0)}
    ctx.add(FloatOp("avg_pool2d", node.name, [x], node.name, params))


def _pool_params(node: fx.Node, m: nn.AvgPool2d | nn.MaxPool2d) -> dict[str, Any]:
    def pair(v: Any) -> tuple[int, int]:
        return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))
    if m.ceil_mode or (isinstance(m, nn.MaxPool2d) and pair(m.dilation) != (1, 1)):
        raise _unsupported(node, "pooling needs ceil_mode=False and dilation 1")
    ph, pw = pair(m.padding)
    return {"kernel": pair(m.kernel_size), "stride": pair(m.stride or m.kernel_size), "padding": (ph, pw, ph, pw)}


@FUSION_RULES.register("module:AvgPool2d")
def _avg_pool(ctx: FuseContext, node: fx.Node, m: nn.AvgPool2d) -> None:
    params = _pool_params(node, m)
    if m.count_include_pad and any(params["padding"]):
        raise _unsupported(node, "AvgPool2d with padding needs count_include_pad=False (TFLite averages valid cells)")
    ctx.add(FloatOp("avg_pool2d", node.name, [ctx.value(node.args[0])], node.name, params))


@FUSION_RULES.register("module:MaxPool2d")
def _max_pool(ctx: FuseContext, node: fx.Node, m: nn.MaxPool2d) -> None:
    ctx.add(FloatOp("max_pool2d", node.name, [ctx.value(node.args[0])], node.name, _pool_params(node, m)))


def _flatten(ctx: FuseContext, node: fx.Node, target: Any) -> None:
    x = ctx.value(node.args[0])
    shape = ctx.shapes[x]
    start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 1)
    if isinstance(target, nn.Flatten):
        start = target.start_dim
    if start != 1 or (len(shape) == 4 and shape[2] * shape[3] != 1 and shape[1] != 1):
        raise _unsupported(node, f"flatten must start at dim 1 of a map with 1×1 spatial size or 1 channel "
                                 f"(NCHW and NHWC orders agree then), got start_dim {start} of {shape}")
    ctx.add(FloatOp("reshape", node.name, [x], node.name))


for _key in ("module:Flatten", "function:flatten", "method:flatten"):
    FUSION_RULES.add(_key, _flatten)


@FUSION_RULES.register("module:Linear")
def _linear(ctx: FuseContext, node: fx.Node, m: nn.Linear) -> None:
    x = ctx.value(node.args[0])
    if len(ctx.shapes[x]) != 2:
        raise _unsupported(node, f"Linear needs a (N, C) input, got shape {ctx.shapes[x]}")
    b = m.bias.detach().double() if m.bias is not None else torch.zeros(m.out_features, dtype=torch.float64)
    ctx.add(FloatOp("fully_connected", node.name, [x], node.name, {"weight": m.weight.detach().double(), "bias": b}))

