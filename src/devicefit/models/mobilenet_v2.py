"""MobileNetV2 (Sandler et al., 2018) with CIFAR-style strides: inverted residuals, total stride 8."""

from __future__ import annotations

from torch import nn

from devicefit.nn import ConvBNAct, InvertedResidual

from ._common import Classifier, check_act, check_input_size, last_width, scaled
from ._registry import register_model

__all__ = ["mobilenet_v2"]

# (expand_ratio t, channels c, repeats n, first stride s) from the paper's Table 2, with the stem and the
# 24-channel stage at stride 1 for 32×32 inputs.
_STAGES = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
           (6, 320, 1, 1))


@register_model("mobilenet_v2", description="MobileNetV2, CIFAR strides (stem stride 1, total stride 8)",
                input_kind="image")
def mobilenet_v2(
    *,
    num_classes: int = 10,
    input_shape: tuple[int, int, int] = (3, 32, 32),
    width_mult: float = 0.35,
    last_channels: int | None = None,
    act: str = "relu6",
) -> nn.Module:
    """Stem 3×3 conv (32·width), 17 MBConv blocks, 1×1 conv to `last_channels` (default 1280·width), head."""
    check_act(act)
    check_input_size(input_shape, 8, "mobilenet_v2")
    c = scaled(32, width_mult)
    layers: list[nn.Module] = [ConvBNAct(input_shape[0], c, 3, 1, act=act)]
    for t, out, n, s in _STAGES:
        for i in range(n):
            layers.append(InvertedResidual(c, scaled(out, width_mult), s if i == 0 else 1, expand_ratio=t, act=act))
            c = scaled(out, width_mult)
    last = last_width(last_channels, 1280, width_mult)
    layers.append(ConvBNAct(c, last, 1, act=act))
    return Classifier(nn.Sequential(*layers), last, num_classes)
