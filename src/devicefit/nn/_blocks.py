"""Export-friendly building blocks: conv-BN-activation, depthwise-separable, MBConv, SE, ResNet basic block.

Every block uses only ops that export cleanly to ONNX and have int8 microcontroller kernels:
conv, depthwise conv, BN (folds into the conv), ReLU/ReLU6/Hardswish, add, mul, global average pool.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from devicefit.core import ConfigError, Registry, check_positive

__all__ = [
    "ACTIVATIONS",
    "BasicBlock",
    "ConvBNAct",
    "DepthwiseSeparable",
    "InvertedResidual",
    "SqueezeExcite",
    "make_activation",
    "make_divisible",
]

ACTIVATIONS: Registry[Callable[[], nn.Module]] = Registry("activation")
ACTIVATIONS.add("relu", nn.ReLU)
ACTIVATIONS.add("relu6", nn.ReLU6)
ACTIVATIONS.add("hardswish", nn.Hardswish)
ACTIVATIONS.add("none", nn.Identity)

KernelSize = int | tuple[int, int]


def make_activation(name: str) -> nn.Module:
    """A fresh activation module for `name` (one of `ACTIVATIONS.names()`)."""
    return ACTIVATIONS.get(name)()


def make_divisible(channels: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round `channels` to the nearest multiple of `divisor`, never below `min_value` (default `divisor`)
    and never more than 10 % below `channels` (the MobileNet rule, so width multipliers stay honest)."""
    check_positive("channels", channels)
    if not isinstance(divisor, int) or divisor < 1:
        raise ConfigError(f"divisor must be an int >= 1, got {divisor!r}")
    floor = divisor if min_value is None else min_value
    rounded = max(floor, int(channels + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * channels:
        rounded += divisor
    return rounded


def _pair(k: KernelSize) -> tuple[int, int]:
    return (k, k) if isinstance(k, int) else (int(k[0]), int(k[1]))


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) → BatchNorm2d → activation; (B, C_in, H, W) → (B, C_out, ⌈H/s⌉, ⌈W/s⌉) for odd kernels.

    Padding defaults to (k - 1) // 2 per axis ("same" for odd kernels). `groups=in_channels` gives a
    depthwise conv. `act` is a name in `ACTIVATIONS` ("relu", "relu6", "hardswish", "none").
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: KernelSize = 3,
        stride: KernelSize = 1,
        *,
        groups: int = 1,
        act: str = "relu",
        padding: KernelSize | None = None,
    ) -> None:
        kh, kw = _pair(kernel_size)
        pad = ((kh - 1) // 2, (kw - 1) // 2) if padding is None else _pair(padding)
        super().__init__(
            nn.Conv2d(in_channels, out_channels, (kh, kw), _pair(stride), pad, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
            make_activation(act),
        )
        self.in_channels, self.out_channels = in_channels, out_channels


class DepthwiseSeparable(nn.Sequential):
    """Depthwise k×k conv (stride s) → BN → act, then pointwise 1×1 conv → BN → act (MobileNetV1 block)."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, *, kernel_size: int = 3, act: str = "relu"
    ) -> None:
        super().__init__(
            ConvBNAct(in_channels, in_channels, kernel_size, stride, groups=in_channels, act=act),
            ConvBNAct(in_channels, out_channels, 1, act=act),
        )
        self.in_channels, self.out_channels = in_channels, out_channels


class SqueezeExcite(nn.Module):
    """x · hardsigmoid(W2 · relu(W1 · gap(x))): global average pool, two 1×1 convs, channel-wise scale.

    (B, C, H, W) → (B, C, H, W); the hidden width is make_divisible(C / reduction).
    """

    def __init__(self, channels: int, reduction: int = 4, *, divisor: int = 8) -> None:
        super().__init__()
        hidden = make_divisible(channels / reduction, divisor)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU()
        self.expand = nn.Conv2d(hidden, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.pool(x)  # (B, C, 1, 1)
        s = self.gate(self.expand(self.act(self.reduce(s))))  # (B, C, 1, 1)
        return x * s


class InvertedResidual(nn.Module):
    """MBConv (MobileNetV2): 1×1 expand (skipped when `expand_ratio` == 1) → k×k depthwise (stride s)
    → optional SE → 1×1 linear projection; adds the input when stride is 1 and channels match.

    (B, C_in, H, W) → (B, C_out, ⌈H/s⌉, ⌈W/s⌉); hidden width = round(C_in · expand_ratio).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        *,
        expand_ratio: float = 6,
        kernel_size: int = 3,
        se: bool = False,
        act: str = "relu6",
    ) -> None:
        super().__init__()
        _check_block_args(stride, kernel_size, expand_ratio)
        hidden = round(in_channels * expand_ratio)
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(in_channels, hidden, 1, act=act))
        layers.append(ConvBNAct(hidden, hidden, kernel_size, stride, groups=hidden, act=act))
        if se:
            layers.append(SqueezeExcite(hidden))
        layers.append(ConvBNAct(hidden, out_channels, 1, act="none"))
        self.block = nn.Sequential(*layers)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


def _check_block_args(stride: int, kernel_size: int, expand_ratio: float) -> None:
    if stride not in (1, 2):
        raise ConfigError(f"stride must be 1 or 2, got {stride!r}")
    if kernel_size not in (1, 3, 5, 7):
        raise ConfigError(f"kernel_size must be one of 1, 3, 5, 7, got {kernel_size!r}")
    check_positive("expand_ratio", expand_ratio)


class BasicBlock(nn.Module):
    """ResNet basic block (He et al., 2016): relu(BN(conv3×3(relu(BN(conv3×3(x))))) + shortcut(x)).

    The shortcut is identity when shapes match, else a 1×1 conv (stride s) + BN projection.
    (B, C_in, H, W) → (B, C_out, ⌈H/s⌉, ⌈W/s⌉).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *, act: str = "relu") -> None:
        super().__init__()
        self.conv1 = ConvBNAct(in_channels, out_channels, 3, stride, act=act)
        self.conv2 = ConvBNAct(out_channels, out_channels, 3, 1, act="none")
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = ConvBNAct(in_channels, out_channels, 1, stride, act="none") if needs_projection else None
        self.act = make_activation(act)
        self.in_channels, self.out_channels = in_channels, out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.act(self.conv2(self.conv1(x)) + identity)
