"""Memory-lean training ops: ReLU/ReLU6 that save a 1-bit or 1-byte mask, a frozen conv that saves no input,
BatchNorm folded to a per-channel affine (or kept at its running statistics), and a channel-sparse conv.

Each wraps the stock module it replaces and gives it back with the learned values by `restore()`, and
registers its saved-tensor rule with the training-memory model (`devicefit.hardware.register_saved_rule`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from devicefit.core import ConfigError
from devicefit.hardware import OpInfo, SavedRef, Workspace, conv_workspace, register_saved_rule, register_workspace_rule

__all__ = ["FoldedBN", "FrozenConv2d", "FrozenStatsBN", "MaskReLU", "SparseConv2d", "pack_bits", "unpack_bits"]

_BIT_WEIGHTS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """A bool tensor as uint8 (⌈numel / 8⌉,), 8 elements per byte, little-endian bit order. Works on
    eighth-size slices so that no full-size temporary beyond the mask itself is made (a copy only when
    numel is not a multiple of 8)."""
    flat = mask.reshape(-1)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    lanes = flat.view(torch.uint8).view(-1, 8)
    packed = lanes[:, 0].clone()
    for k in range(1, 8):
        packed |= lanes[:, k] << k
    return packed


def unpack_bits(packed: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Inverse of `pack_bits`: the bool tensor of `shape` (one full-size byte buffer, no other temporary)."""
    bits = packed.view(-1, 1) & _BIT_WEIGHTS  # (⌈n/8⌉, 8), each byte 0 or 2^k
    bits.clamp_(max=1)
    return bits.view(torch.bool).reshape(-1)[: math.prod(shape)].view(*shape)


class _MaskedClampFn(torch.autograd.Function):
    """clamp(x, 0, upper) whose backward needs only where 0 < x (< upper): saved as a mask, not as x."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, upper: float | None, bits: int) -> torch.Tensor:
        mask = x > 0
        if upper is not None:
            mask &= x < upper
        ctx.shape, ctx.bits = tuple(mask.shape), bits
        ctx.save_for_backward(pack_bits(mask) if bits == 1 else mask)
        del mask
        return x.clamp(min=0) if upper is None else x.clamp(0, upper)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (saved,) = ctx.saved_tensors
        mask = unpack_bits(saved, ctx.shape) if ctx.bits == 1 else saved
        return torch.where(mask, grad, 0.0), None, None  # no fp32 copy of the mask


class MaskReLU(nn.Module):
    """ReLU (`upper` None) or ReLU6 (`upper` 6) that keeps a `bits`-bit mask (1 or 8) for backward instead
    of its fp32 output/input: 32× or 4× less saved memory, the same gradients."""

    def __init__(self, upper: float | None = None, bits: int = 1) -> None:
        super().__init__()
        if bits not in (1, 8):
            raise ConfigError(f"mask bits must be 1 or 8, got {bits!r}")
        self.upper, self.bits = upper, bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled() or not x.requires_grad:
            return x.clamp(min=0) if self.upper is None else x.clamp(0, self.upper)
        return _MaskedClampFn.apply(x, self.upper, self.bits)

    def restore(self) -> nn.Module:
        return nn.ReLU() if self.upper is None else nn.ReLU6()


class _FrozenConvFn(torch.autograd.Function):
    """conv2d with a frozen weight: backward needs the weight (and the input's shape), not the input."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                conf: tuple[Any, ...]) -> torch.Tensor:
        ctx.save_for_backward(weight)
        ctx.conf, ctx.input_shape, ctx.has_bias = conf, tuple(x.shape), bias is not None
        return F.conv2d(x, weight, bias, *conf)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        (weight,) = ctx.saved_tensors
        grad_x = _conv2d_input_grad(ctx.input_shape, weight, grad, ctx.conf) if ctx.needs_input_grad[0] else None
        grad_b = grad.sum((0, 2, 3)) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, None, grad_b, None


def _conv2d_input_grad(input_shape: tuple[int, ...], weight: torch.Tensor, grad: torch.Tensor,
                       conf: tuple[Any, ...]) -> torch.Tensor:
    """The input gradient of conv2d as the transposed conv of `grad` (`torch.nn.grad.conv2d_input` would
    materialise an input-sized dummy first), output padding chosen to give back `input_shape`."""
    stride, padding, dilation = (_pair(v) for v in conf[:3])
    groups = conf[3]
    extra = tuple(input_shape[2 + i] - ((grad.shape[2 + i] - 1) * stride[i] - 2 * padding[i]
                                       + dilation[i] * (weight.shape[2 + i] - 1) + 1) for i in range(2))
    return F.conv_transpose2d(grad, weight, None, stride, padding, extra, groups, dilation)


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class FrozenConv2d(nn.Module):
    """A Conv2d whose weight is frozen: saves nothing for backward (stock PyTorch keeps the input even
    then). Its bias, if any, may still train."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ConfigError(f"FrozenConv2d needs numeric zero padding, got {conv.padding!r}/{conv.padding_mode}")
        conv.weight.requires_grad_(False)
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        conf = (c.stride, c.padding, c.dilation, c.groups)
        return _FrozenConvFn.apply(x, c.weight, c.bias, conf)

    def restore(self) -> nn.Module:
        return self.conv


class FoldedBN(nn.Module):
    """BatchNorm2d at its running statistics as y = x·scale + shift (per channel): saves nothing for
    backward, since `scale` is a constant. `shift` trains when `train_shift`; `restore` writes it back
    into the BN's bias (β' = shift + mean·scale)."""

    def __init__(self, bn: nn.BatchNorm2d, *, train_shift: bool) -> None:
        super().__init__()
        with torch.no_grad():
            scale = (bn.weight if bn.affine else 1.0) / torch.sqrt(bn.running_var + bn.eps)
            shift = (bn.bias if bn.affine else 0.0) - bn.running_mean * scale
        self.bn = bn
        for p in bn.parameters():
            p.requires_grad_(False)
        self.register_buffer("scale", scale.detach().clone())
        self.shift = nn.Parameter(shift.detach().clone(), requires_grad=train_shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # one fused op: no x·scale temporary; autograd keeps only the (constant) scale
        return torch.addcmul(self.shift.view(1, -1, 1, 1), x, self.scale.view(1, -1, 1, 1))

    def restore(self) -> nn.Module:
        bn = self.bn
        if bn.affine:
            with torch.no_grad():
                bn.bias.copy_(self.shift + bn.running_mean * self.scale)
        return bn


class FrozenStatsBN(nn.Module):
    """Stock BatchNorm2d held in eval mode (running statistics) whatever `train()` says: what a stock
    bias-only update does, and how γ/β train under `SchemeConfig(bn_stats="running")`. It still saves
    its input for backward (not the batch mean and inverse std that train mode adds)."""

    def __init__(self, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        self.bn = bn.eval()

    def train(self, mode: bool = True) -> FrozenStatsBN:
        super().train(mode)
        self.bn.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x)

    def restore(self) -> nn.Module:
        return self.bn


class SparseConv2d(nn.Module):
    """A Conv2d whose weight trains in `channels` (output-channel indices) only: the weight is
    frozen + scatter(delta), so gradients and optimizer state exist for the chosen rows alone."""

    def __init__(self, conv: nn.Conv2d, channels: Sequence[int]) -> None:
        super().__init__()
        idx = torch.as_tensor(list(channels), dtype=torch.long)
        if idx.numel() == 0 or idx.min() < 0 or idx.max() >= conv.out_channels:
            raise ConfigError(f"channels must be 1+ indices in [0, {conv.out_channels}), got {list(channels)}")
        conv.weight.requires_grad_(False)
        self.conv = conv
        self.register_buffer("channels", idx)
        self.delta = nn.Parameter(torch.zeros(len(idx), *conv.weight.shape[1:]))

    def weight(self) -> torch.Tensor:
        return self.conv.weight.index_add(0, self.channels, self.delta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        return F.conv2d(x, self.weight(), c.bias, c.stride, c.padding, c.dilation, c.groups)

    def restore(self) -> nn.Module:
        with torch.no_grad():
            self.conv.weight.copy_(self.weight())
        return self.conv


# --- saved-tensor rules for the training-memory model -----------------------------------------------------------


@register_saved_rule(MaskReLU)
def _mask_rule(op: OpInfo) -> Sequence[SavedRef]:
    module = op.module
    if not any(op.inputs_require_grad):
        return ()
    bits = module.bits if isinstance(module, MaskReLU) else 8
    return (SavedRef.new(math.ceil(op.output_numel * bits / 8)),)


@register_saved_rule(FrozenConv2d, FoldedBN)
def _nothing_rule(op: OpInfo) -> Sequence[SavedRef]:
    return ()


@register_saved_rule(FrozenStatsBN)
def _input_rule(op: OpInfo) -> Sequence[SavedRef]:
    return (SavedRef.input(0),)


@register_saved_rule(SparseConv2d)
def _sparse_conv_rule(op: OpInfo) -> Sequence[SavedRef]:
    """The input and the materialised weight (frozen + scattered delta) the conv was run with."""
    module = op.module
    weight_bytes = module.conv.weight.numel() * 4 if isinstance(module, SparseConv2d) else 0
    return (SavedRef.input(0), SavedRef.new(weight_bytes))


@register_workspace_rule(MaskReLU)
def _mask_workspace(op: OpInfo) -> Workspace:
    """Forward: none (the full bool mask is freed before the fp32 output is made, and is smaller);
    backward: the unpacked byte mask (1-bit masks only)."""
    module = op.module
    bits = module.bits if isinstance(module, MaskReLU) else 8
    return Workspace(0, op.output_numel if bits == 1 else 0)


@register_workspace_rule(FrozenConv2d, SparseConv2d)
def _wrapped_conv_workspace(op: OpInfo) -> Workspace:
    sparse = isinstance(op.module, SparseConv2d)  # a frozen conv makes its input gradient by a transposed conv
    return conv_workspace(op, getattr(op.module, "conv", None), weight_grad=sparse, input_grad_by_transpose=not sparse)
