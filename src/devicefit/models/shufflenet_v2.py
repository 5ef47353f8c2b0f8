"""ShuffleNetV2 (Ma et al., 2018) with CIFAR-style strides: channel split, two branches, channel shuffle."""

from __future__ import annotations

import torch
from torch import nn

from devicefit.nn import ConvBNAct

from ._common import Classifier, check_input_size, last_width, scaled
from ._registry import register_model

__all__ = ["ShuffleUnit", "channel_shuffle", "shuffle_indices", "shufflenet_v2"]

_STAGE_CHANNELS = (116, 232, 464)  # at width 1.0 (the paper's Table 5)
_STAGE_REPEATS = (4, 8, 4)


def shuffle_indices(channels: int, groups: int) -> torch.Tensor:
    """Source channel of each output channel of a shuffle: (g·n) → (n·g) interleaves the g groups."""
    return torch.arange(channels).view(groups, channels // groups).t().reshape(-1)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, g·n, H, W) → (B, n·g, H, W) by reshape/transpose (the reference; units use a constant gather)."""
    x = x.unflatten(1, (groups, -1))  # (B, g, n, H, W)
    return x.transpose(1, 2).flatten(1, 2)  # (B, n·g, H, W)


def _branch(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    return nn.Sequential(ConvBNAct(in_ch, out_ch, 1),
                         ConvBNAct(out_ch, out_ch, 3, stride, groups=out_ch, act="none"),
                         ConvBNAct(out_ch, out_ch, 1))


class ShuffleUnit(nn.Module):
    """One ShuffleNetV2 unit: (B, C_in, H, W) → (B, C_out, H/s, W/s); C_out must be even.

    Stride 1 splits the channels in halves and transforms one; stride 2 transforms both copies of the input.
    The shuffle is a gather with constant indices (one ONNX Gather, a copy on an MCU) rather than
    reshape/transpose, which the legacy exporter turns into Shape/Slice/Concat chains.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        half = out_channels // 2
        self.split = (in_channels // 2, in_channels - in_channels // 2)
        if stride == 1:
            self.left = None
            self.right = _branch(self.split[1], half, 1)
        else:
            self.left = nn.Sequential(ConvBNAct(in_channels, in_channels, 3, stride, groups=in_channels, act="none"),
                                      ConvBNAct(in_channels, half, 1))
            self.right = _branch(in_channels, half, stride)
        self.register_buffer("shuffle", shuffle_indices(2 * half, 2), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.left is None:
            a, b = torch.split(x, self.split, dim=1)  # two (B, C/2, H, W) halves
            out = torch.cat((a, self.right(b)), dim=1)  # (B, C_out, H, W)
        else:
            out = torch.cat((self.left(x), self.right(x)), dim=1)  # (B, C_out, H/2, W/2)
        return torch.index_select(out, 1, self.shuffle)  # channel shuffle, groups = 2


@register_model("shufflenet_v2", description="ShuffleNetV2, CIFAR strides (stem stride 1, no max pool, stride 8)",
                input_kind="image")
def shufflenet_v2(
    *,
    num_classes: int = 10,
    input_shape: tuple[int, int, int] = (3, 32, 32),
    width_mult: float = 0.5,
    last_channels: int | None = None,
) -> nn.Module:
    """Stem 3×3 conv (24), three stages of 4/8/4 units, 1×1 conv to `last_channels` (default 1024·width), head."""
    check_input_size(input_shape, 8, "shufflenet_v2")
    c = 24
    layers: list[nn.Module] = [ConvBNAct(input_shape[0], c, 3, 1)]
    for base, repeats in zip(_STAGE_CHANNELS, _STAGE_REPEATS, strict=True):
        out = scaled(base, width_mult, 16)  # a multiple of 16 so both halves stay multiples of 8
        layers += [ShuffleUnit(c if i == 0 else out, out, 2 if i == 0 else 1) for i in range(repeats)]
        c = out
    last = last_width(last_channels, 1024, width_mult)
    layers.append(ConvBNAct(c, last, 1))
    return Classifier(nn.Sequential(*layers), last, num_classes)
