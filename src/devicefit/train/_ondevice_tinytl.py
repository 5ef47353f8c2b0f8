"""TinyTL-style lite residual learning (Cai et al., NeurIPS 2020, §3.2): frozen weights, trained biases,
and beside each block a small trainable branch at reduced resolution: 2×2 average pool (saving nothing) →
3×3 group conv (the block's stride) → mask ReLU → 1×1 conv (zero-initialised, so training starts from
the deployed network) → nearest resize to the block's output, added to it.

The branches see the block's input at a quarter of its pixels, so the activations they keep for backward
are small. They are new modules: a "tinytl" network keeps them after `restore`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from devicefit.hardware import OpInfo, SavedRef, Workspace, register_saved_rule, register_workspace_rule

from ._ondevice_ops import MaskReLU
from ._ondevice_schemes import SchemeConfig, UpdatePlan, WeightLayer, register_scheme

__all__ = ["LeanAvgPool2d", "LiteResidual", "ResizeTo", "add_lite_residuals_"]


class _LeanAvgPoolFn(torch.autograd.Function):
    """2-D average pool, kernel = stride = r, floor mode: backward spreads each gradient over its window
    and needs only the input's shape."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, r: int) -> torch.Tensor:
        ctx.shape, ctx.r = tuple(x.shape), r
        return F.avg_pool2d(x, r)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        r, (_, _, h, w) = ctx.r, ctx.shape
        spread = (grad / (r * r)).repeat_interleave(r, dim=2).repeat_interleave(r, dim=3)  # scale the small one
        return F.pad(spread, (0, w - spread.shape[3], 0, h - spread.shape[2])), None


class LeanAvgPool2d(nn.Module):
    """Average pool with kernel = stride = `r` that saves nothing for backward (stock avg_pool2d keeps its
    input)."""

    def __init__(self, r: int = 2) -> None:
        super().__init__()
        self.r = r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled() or not x.requires_grad:
            return F.avg_pool2d(x, self.r)
        return _LeanAvgPoolFn.apply(x, self.r)


class ResizeTo(nn.Module):
    """Nearest-neighbour resize of `y` (B, C, h, w) to the spatial size of `like` (B, C', H, W);
    backward needs only sizes."""

    def forward(self, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(y, size=tuple(like.shape[-2:]), mode="nearest")


class LiteResidual(nn.Module):
    """`block(x) + branch(x)`, branch = resize(conv1×1(relu(gconv3×3_s(avgpool₂(x))))) (see module doc)."""

    def __init__(self, block: nn.Module, in_channels: int, out_channels: int, stride: int, *,
                 mask_bits: int = 1) -> None:
        super().__init__()
        groups = math.gcd(in_channels, max(1, in_channels // 8))  # about 8 channels per group
        self.block = block
        self.pool = LeanAvgPool2d(2)
        self.conv = nn.Conv2d(in_channels, in_channels, 3, stride, 1, groups=groups, bias=False)
        self.act = MaskReLU(None, mask_bits)
        self.project = nn.Conv2d(in_channels, out_channels, 1)
        nn.init.zeros_(self.project.weight)
        nn.init.zeros_(self.project.bias)
        self.resize = ResizeTo()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        side = self.project(self.act(self.conv(self.pool(x))))  # (B, C_out, ~H/2s, ~W/2s)
        return out + self.resize(side, out)

    def restore(self) -> nn.Module:
        return self


def _stride_of(block: nn.Module) -> int:
    return max((int(m.stride[0]) for m in block.modules() if isinstance(m, nn.Conv2d)), default=1)


def add_lite_residuals_(net: nn.Module, cfg: SchemeConfig) -> None:
    """Wrap every block after the stem of `net.features` that states `in_channels`/`out_channels` (the zoo's
    nn blocks) in a trainable `LiteResidual`, in place."""
    features = getattr(net, "features", None)
    if not isinstance(features, nn.Sequential):
        return
    for name, block in list(features.named_children())[1:]:
        cin, cout = getattr(block, "in_channels", None), getattr(block, "out_channels", None)
        if isinstance(cin, int) and isinstance(cout, int):
            setattr(features, name, LiteResidual(block, cin, cout, _stride_of(block), mask_bits=cfg.mask_bits))


@register_scheme("tinytl", lean=True, transform=add_lite_residuals_)
def _tinytl(cfg: SchemeConfig, layers: list[WeightLayer]) -> UpdatePlan:
    """Biases and the classifier, as "bias"; the lite residual branches are added by the transform."""
    return UpdatePlan({len(layers) - 1: 1.0}, frozenset(range(len(layers))))


@register_saved_rule(LeanAvgPool2d, ResizeTo)
def _nothing_rule(op: OpInfo) -> Sequence[SavedRef]:
    return ()


@register_workspace_rule(ResizeTo)
def _resize_workspace(op: OpInfo) -> Workspace:
    """Forward: CPU upsample_nearest2d holds an input-sized and an output-sized temporary besides its output
    (profiler, 1 thread)."""
    return Workspace(4 * (op.input_numel + op.output_numel), 0)


@register_workspace_rule(LeanAvgPool2d)
def _pool_workspace(op: OpInfo) -> Workspace:
    """Backward: the spread gradient (input-sized) before it is padded into the input gradient."""
    return Workspace(0, 4 * op.input_numel)
