"""The FBNet space (Wu et al., CVPR 2019) at CIFAR resolution, as benchmarked by HW-NAS-Bench (Li et al., 2021):
22 searchable layers × 9 blocks, with measured latency tables (no accuracy table)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from devicefit.core import ArchSpec, Registry
from devicefit.hardware import FBNET
from devicefit.models.shufflenet_v2 import shuffle_indices
from devicefit.nn import ConvBNAct

from ._base import CellSpace, register_space
from ._checks import check_image_shape, check_int
from ._tabular import TabularSpace

__all__ = ["FBNET_STAGES", "FBNetBlock", "FBNetNetwork", "FBNetSpace", "build_fbnet", "layer_shapes"]

STEM_CHANNELS = 16
HEAD_CHANNELS = 1504


@dataclass(frozen=True)
class Stage:
    """`repeats` searchable layers to `channels`; the first one has stride `stride`."""

    channels: int
    repeats: int
    stride: int


# FBNet's Table 1 adapted to 32×32 inputs as in HW-NAS-Bench: stem stride 1 and the second stage at stride 1
# (ImageNet uses 2 for both), so the strides are 1, 1, 2, 2, 1, 2, 1 and the last map is 4×4.
FBNET_STAGES: tuple[Stage, ...] = (
    Stage(16, 1, 1), Stage(24, 4, 1), Stage(32, 4, 2), Stage(64, 4, 2),
    Stage(112, 4, 1), Stage(184, 4, 2), Stage(352, 1, 1),
)


def layer_shapes() -> tuple[tuple[int, int, int], ...]:
    """(in_channels, out_channels, stride) of each of the 22 searchable layers, position order."""
    shapes, c_in = [], STEM_CHANNELS
    for st in FBNET_STAGES:
        for i in range(st.repeats):
            shapes.append((c_in, st.channels, st.stride if i == 0 else 1))
            c_in = st.channels
    return tuple(shapes)


class FBNetBlock(nn.Module):
    """FBNet's inverted-residual block: 1×1 conv (groups g) → BN → ReLU → [channel shuffle when g > 1]
    → k×k depthwise (stride s) → BN → ReLU → 1×1 conv (groups g) → BN, plus the input when s = 1 and C_in = C_out.

    (B, C_in, H, W) → (B, C_out, ⌈H/s⌉, ⌈W/s⌉); hidden width C_in · expansion. Unlike MobileNetV2 the expand
    conv is kept at expansion 1 (the FBNet/HW-NAS-Bench definition), so `InvertedResidual` does not fit.
    The shuffle is a gather with constant indices: one ONNX Gather, no Shape/Reshape chain.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, *, kernel_size: int, expansion: int,
                 groups: int = 1) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.expand = ConvBNAct(in_channels, hidden, 1, groups=groups, act="relu")
        self.depthwise = ConvBNAct(hidden, hidden, kernel_size, stride, groups=hidden, act="relu")
        self.project = ConvBNAct(hidden, out_channels, 1, groups=groups, act="none")
        self.register_buffer("shuffle", shuffle_indices(hidden, groups) if groups > 1 else None, persistent=False)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x)  # (B, hidden, H, W)
        if self.shuffle is not None:
            y = torch.index_select(y, 1, self.shuffle)
        y = self.project(self.depthwise(y))  # (B, C_out, H/s, W/s)
        return x + y if self.use_residual else y


def _skip(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """`skip`: the identity where the layer keeps its shape, else (HW-NAS-Bench's choice, also FBNet's
    reference builder) a 1×1 conv (stride s) → BN → ReLU projection, since a shape change needs weights."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return ConvBNAct(in_channels, out_channels, 1, stride, act="relu")


def _block(kernel_size: int, expansion: int, groups: int = 1) -> Callable[[int, int, int], nn.Module]:
    def make(in_channels: int, out_channels: int, stride: int) -> nn.Module:
        return FBNetBlock(in_channels, out_channels, stride, kernel_size=kernel_size, expansion=expansion,
                          groups=groups)

    return make


# op name -> factory (in_channels, out_channels, stride) -> module
BLOCKS: Registry[Callable[[int, int, int], nn.Module]] = Registry("fbnet block")
for _name, _args in {"k3_e1": (3, 1), "k3_e1_g2": (3, 1, 2), "k3_e3": (3, 3), "k3_e6": (3, 6),
                     "k5_e1": (5, 1), "k5_e1_g2": (5, 1, 2), "k5_e3": (5, 3), "k5_e6": (5, 6)}.items():
    BLOCKS.add(_name, _block(*_args))
BLOCKS.add("skip", _skip)


class FBNetNetwork(nn.Module):
    """Stem 3×3 conv (16, stride 1) → BN → ReLU, the 22 searchable layers, 1×1 conv (1504) → BN → ReLU,
    global average pool, linear. (B, in_channels, H, W) → (B, num_classes)."""

    def __init__(self, ops: Sequence[str], *, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.stem = ConvBNAct(in_channels, STEM_CHANNELS, 3, 1, act="relu")
        self.layers = nn.Sequential(*(BLOCKS.get(op)(c_in, c_out, s)
                                      for op, (c_in, c_out, s) in zip(ops, layer_shapes(), strict=True)))
        self.head = nn.Sequential(ConvBNAct(FBNET_STAGES[-1].channels, HEAD_CHANNELS, 1, act="relu"),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(self.layers(self.stem(x))))  # (B, num_classes)


def build_fbnet(spec: ArchSpec, *, num_classes: int = 100, input_shape: Sequence[int] = (3, 32, 32)) -> FBNetNetwork:
    """A fresh FBNet-space network for `spec` (22 ops); (B, *input_shape) → (B, num_classes).
    The macro-architecture is the CIFAR one (total stride 8), whatever the input size (H, W >= 8)."""
    ops = FBNET.ops_of(spec)
    shape = check_image_shape(input_shape, 8, "fbnet")
    check_int("num_classes", num_classes, 1)
    return FBNetNetwork(ops, num_classes=num_classes, in_channels=shape[0])


@register_space
class FBNetSpace(TabularSpace, CellSpace):
    """FBNet: 9^22 ≈ 9.8e20 architectures (22 layers × {k3,k5} × {e1,e3,e6} + grouped e1 + skip), with
    latency tables for 5,000 sampled architectures and no accuracy table (`accuracy` raises ConfigError)."""

    name: ClassVar[str] = "fbnet"
    encoding = FBNET

    def build(self, spec: ArchSpec, **kwargs: Any) -> nn.Module:
        """`build_fbnet(spec, num_classes=100, input_shape=(3, 32, 32))`."""
        return build_fbnet(self.validate(spec), **kwargs)
