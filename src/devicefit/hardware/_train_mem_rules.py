"""What autograd keeps for backward, op by op: the saved-tensor rules of the training-memory model.

Each rule says which tensors an op saves when it takes part in backward, as stock PyTorch 2.x does it
(checked by `devicefit.train.saved_activation_bytes` through saved-tensor hooks), not the textbook
minimum: Conv2d saves its input even when its weight is frozen, Linear only when its weight needs a
gradient, BatchNorm saves its input in train and eval mode, ReLU saves its output, ReLU6/Hardswish/
Hardsigmoid their input, mean pooling/add/cat/split nothing, mul the other operand. New modules (the
memory-lean ops of `devicefit.train`) register their own rule with `register_saved_rule`. Workspace rules
(`register_workspace_rule`) give the transient buffers an op allocates inside its forward and backward.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from devicefit.core import Registry, UnsupportedOpError

__all__ = ["SAVED_RULES", "WORKSPACE_RULES", "OpInfo", "SavedRef", "SavedRule", "Workspace", "has_module_rule",
           "register_saved_rule", "register_workspace_rule", "rule_key", "saved_rule_for", "workspace_for"]


@dataclass(frozen=True)
class SavedRef:
    """One tensor an op saves: its `index`-th tensor input ("input"), its output ("output"), or a fresh
    tensor of `nbytes` that aliases nothing else ("new", e.g. a 1-byte mask)."""

    kind: str
    index: int = 0
    nbytes: int = 0

    @classmethod
    def input(cls, index: int = 0) -> SavedRef:
        return cls("input", index)

    @classmethod
    def output(cls) -> SavedRef:
        return cls("output")

    @classmethod
    def new(cls, nbytes: int) -> SavedRef:
        return cls("new", nbytes=int(nbytes))


@dataclass(frozen=True)
class OpInfo:
    """An op as the rules see it. `input_shapes`/`inputs_require_grad` list its tensor inputs in order
    (parameters reached through `get_attr` included); `params_require_grad` is True when a parameter of
    its module needs a gradient; `module` is None for functions and methods."""

    name: str
    module: nn.Module | None
    input_shapes: tuple[tuple[int, ...], ...]
    output_shape: tuple[int, ...]
    inputs_require_grad: tuple[bool, ...]
    params_require_grad: bool

    @property
    def output_numel(self) -> int:
        return _numel(self.output_shape)

    @property
    def input_numel(self) -> int:
        return _numel(self.input_shapes[0]) if self.input_shapes else 0


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


@dataclass(frozen=True)
class Workspace:
    """Transient bytes an op holds inside its own call, on top of its inputs and outputs (forward) or its
    output gradient and input gradients (backward): layout reorders, im2col, masks, contiguous copies."""

    forward_bytes: int = 0
    backward_bytes: int = 0
    passes_grad: bool = False  # backward hands its output gradient on as the input gradients (add, views)


SavedRule = Callable[[OpInfo], Sequence[SavedRef]]


@dataclass(frozen=True)
class _Entry:
    rule: SavedRule
    alias: bool  # the output is a view of input 0 (shares its storage)


SAVED_RULES: Registry[_Entry] = Registry("saved-tensor rule")
WorkspaceRule = Callable[[OpInfo], Workspace]
WORKSPACE_RULES: Registry[WorkspaceRule] = Registry("workspace rule")


def rule_key(op: type | Callable[..., object] | str) -> str:
    """The registry key of a module class ("module:pkg.Class"), a function or a method name ("fn:name")."""
    if isinstance(op, type):
        return f"module:{op.__module__}.{op.__qualname__}"
    name = op if isinstance(op, str) else getattr(op, "__name__", str(op))
    return f"fn:{name}"


def register_saved_rule(*ops: type | Callable[..., object] | str,
                        alias: bool = False) -> Callable[[SavedRule], SavedRule]:
    """Decorator registering `rule(OpInfo) -> [SavedRef]` for module classes, functions or method names.

    `alias=True` declares that the op's output is a view of its first input (flatten, split, getitem):
    a tensor saved downstream then keeps the first input's storage alive. A module class with a rule is
    a leaf of the trace (its forward is not traced through).
    """

    def deco(rule: SavedRule) -> SavedRule:
        for op in ops:
            SAVED_RULES.add(rule_key(op), _Entry(rule, alias))
        return rule

    return deco


def _module_entry(cls: type) -> _Entry | None:
    for klass in cls.__mro__:
        key = rule_key(klass)
        if key in SAVED_RULES:
            return SAVED_RULES.get(key)
    return None


def register_workspace_rule(*ops: type | Callable[..., object] | str) -> Callable[[WorkspaceRule], WorkspaceRule]:
    """Decorator registering `rule(OpInfo) -> Workspace` for module classes, functions or method names.
    An op without one is taken to allocate nothing beyond its outputs and gradients."""

    def deco(rule: WorkspaceRule) -> WorkspaceRule:
        for op in ops:
            WORKSPACE_RULES.add(rule_key(op), rule)
        return rule

    return deco


def workspace_for(op: nn.Module | Callable[..., object] | str, info: OpInfo) -> Workspace:
    """The workspace of `op` (a module by class, walking its bases) as `info` describes it; none if unknown."""
    keys = [rule_key(k) for k in type(op).__mro__] if isinstance(op, nn.Module) else [rule_key(op)]
    for key in keys:
        if key in WORKSPACE_RULES:
            return WORKSPACE_RULES.get(key)(info)
    return Workspace()


def has_module_rule(module: nn.Module) -> bool:
    return _module_entry(type(module)) is not None


def saved_rule_for(op: nn.Module | Callable[..., object] | str) -> _Entry:
    """The rule of a module (by class, walking its bases), function or method; raise for an unknown op."""
    if isinstance(op, nn.Module):
        entry = _module_entry(type(op))
    else:
        entry = SAVED_RULES.get(rule_key(op)) if rule_key(op) in SAVED_RULES else None
    if entry is None:
        name = type(op).__name__ if isinstance(op, nn.Module) else rule_key(op)[3:]
        raise UnsupportedOpError(f"training-memory model has no saved-tensor rule for op {name!r}; "
                                 f"register one with devicefit.hardware.register_saved_rule")
    return entry


# --- stock PyTorch ops --------------------------------------------------------------------------------------


def _nothing(op: OpInfo) -> Sequence[SavedRef]:
    return ()


def _input0(op: OpInfo) -> Sequence[SavedRef]:
    return (SavedRef.input(0),)


register_saved_rule(nn.Conv2d)(_input0)  # saves input and weight whatever needs a gradient
register_saved_rule(nn.ReLU6, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.Sigmoid)(_input0)
register_saved_rule(nn.AdaptiveAvgPool2d, nn.Dropout, "add", "sub", "cat")(_nothing)  # functions go by name
register_saved_rule(nn.Flatten, nn.Identity, "flatten", "split", "getitem", "view", "reshape", alias=True)(_nothing)


@register_saved_rule(nn.ReLU)
def _relu(op: OpInfo) -> Sequence[SavedRef]:
    return (SavedRef.output(),)


@register_saved_rule(nn.Linear)
def _linear(op: OpInfo) -> Sequence[SavedRef]:
    weight = getattr(op.module, "weight", None)
    return (SavedRef.input(0),) if weight is not None and weight.requires_grad else ()


@register_saved_rule(nn.BatchNorm2d)
def _batch_norm(op: OpInfo) -> Sequence[SavedRef]:
    """Input always; in train mode also the batch mean and inverse std (fp32, one per channel each)."""
    training = op.module is not None and op.module.training
    channels = op.output_shape[1] if len(op.output_shape) > 1 else 0
    return (SavedRef.input(0), *((SavedRef.new(4 * channels),) * 2 if training else ()))


@register_saved_rule("mul")
def _mul(op: OpInfo) -> Sequence[SavedRef]:
    """a·b keeps b when a needs a gradient and a when b does."""
    rg = op.inputs_require_grad
    out = [SavedRef.input(1)] if len(rg) > 1 and rg[0] else []
    return out + ([SavedRef.input(0)] if len(rg) > 1 and rg[1] else [])


@register_saved_rule("index_select")
def _index_select(op: OpInfo) -> Sequence[SavedRef]:
    return (SavedRef.input(1),) if len(op.input_shapes) > 1 else ()  # the index (a buffer in the zoo)


def _native_pointwise(op: OpInfo, conv: nn.Module | None) -> bool:
    """A dense 1×1 conv with stride and dilation 1 that CPU PyTorch runs without oneDNN: its dispatch
    (`ConvParams::use_mkldnn`) keeps such a conv on the native GEMM path, on the plain layout, when the batch
    is under 16 and torch runs on one thread."""
    batch = op.input_shapes[0][0] if op.input_shapes and op.input_shapes[0] else 1
    return (isinstance(conv, nn.Conv2d) and conv.groups == 1 and tuple(conv.kernel_size) == (1, 1)
            and tuple(conv.stride) == (1, 1) and tuple(conv.dilation) == (1, 1)
            and batch < 16 and torch.get_num_threads() == 1)


@functools.cache
def _channel_block() -> int:
    """oneDNN's channel block for fp32 on this CPU: 16 where torch dispatches AVX-512 kernels, else 8."""
    return 16 if torch.backends.cpu.get_cpu_capability().startswith("AVX512") else 8


def _padded(nbytes: int, channels: int, block: int) -> int:
    """`nbytes` of a tensor with `channels` channels, grown to a whole number of `block`-channel blocks."""
    if nbytes == 0 or channels <= 0:
        return nbytes
    return nbytes * (-(-channels // block) * block) // channels


def conv_workspace(op: OpInfo, conv: nn.Module | None, *, weight_grad: bool,
                   input_grad_by_transpose: bool = False) -> Workspace:
    """A CPU conv2d, as measured with the profiler (1 thread, batch 8-32, 1-64 channels, stride 1-2, dense,
    grouped and depthwise; the input I and output O in bytes).

    oneDNN forward: a blocked-layout output is reordered to the plain one, and an input of 8+ channels is
    first reordered to the blocked layout: max(I, O) on top of input and output (O alone for fewer
    channels). oneDNN backward, on top of the output gradient, the input gradient and the weight gradient:
    the input gradient alone needs max(I, O) (blocked gradients), plus I more for a strided dense conv;
    with a weight gradient the input is reordered too: I + O (+ O when a strided dense conv also makes its
    input gradient). A pointwise conv on the native path (`_native_pointwise`) needs nothing, in forward
    and backward, except when its input gradient is made by a transposed conv (`input_grad_by_transpose`,
    as `FrozenConv2d` does): then an I-sized buffer.
    Measured on AVX2, where oneDNN blocks channels by 8. Where torch dispatches AVX-512 kernels, the block is 16
    and blocked buffers are padded to it: the forward reorders and the input-gradient buffers count their
    channels rounded up to 16 (an 8-channel ResNet stage's buffer doubles; checked against the allocator on
    an AVX-512 EPYC, tests/test_ondevice_memory.py).
    """
    input_grad = bool(op.inputs_require_grad and op.inputs_require_grad[0])
    if _native_pointwise(op, conv):
        return Workspace(0, 4 * op.input_numel if input_grad and input_grad_by_transpose else 0)
    in_bytes, out_bytes = 4 * op.input_numel, 4 * op.output_numel
    strided_dense = getattr(conv, "groups", 1) == 1 and max(getattr(conv, "stride", (1,))) > 1
    reorder_in = in_bytes if getattr(conv, "in_channels", 0) >= 8 else 0
    reorder_out, grad_in, grad_out = out_bytes, in_bytes, out_bytes
    block = _channel_block()
    if block > 8:  # AVX-512: blocked buffers pad channels to the block (8 channels: 2x)
        reorder_in = _padded(reorder_in, getattr(conv, "in_channels", 0), block)
        reorder_out = _padded(out_bytes, getattr(conv, "out_channels", 0), block)
        grad_in = _padded(in_bytes, getattr(conv, "in_channels", 0), block)
        grad_out = _padded(out_bytes, getattr(conv, "out_channels", 0), block)
    if weight_grad:
        backward = in_bytes + out_bytes + (out_bytes if input_grad and strided_dense else 0)
    elif input_grad:
        backward = max(grad_in, grad_out) + (in_bytes if strided_dense else 0)
    else:
        backward = 0
    return Workspace(max(reorder_in, reorder_out), backward)


@register_workspace_rule(nn.Flatten, nn.Identity, "add", "cat", "flatten", "view", "reshape", "getitem")
def _pass_through(op: OpInfo) -> Workspace:
    """Backward hands the output gradient on (add: the tensor itself to every input; cat: views of it)."""
    return Workspace(passes_grad=True)


@register_workspace_rule(nn.Conv2d)
def _conv_workspace(op: OpInfo) -> Workspace:
    weight = getattr(op.module, "weight", None)
    return conv_workspace(op, op.module, weight_grad=weight is not None and weight.requires_grad)
