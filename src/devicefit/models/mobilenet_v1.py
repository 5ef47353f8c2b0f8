"""MobileNetV1 (Howard et al., 2017) with CIFAR-style strides: depthwise-separable blocks, total stride 8."""

from __future__ import annotations

from torch import nn

from devicefit.nn import ConvBNAct, DepthwiseSeparable

from ._common import Classifier, check_act, check_input_size, check_int, scaled
from ._registry import register_model

__all__ = ["mobilenet_v1"]

# (out_channels, stride) of the 13 depthwise-separable blocks; the ImageNet net also strides the 1024 stage
# and the stem, which would shrink a 32×32 input to 1×1.
_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
           (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 1), (1024, 1))


@register_model("mobilenet_v1", description="MobileNetV1, CIFAR strides (stem stride 1, total stride 8)",
                input_kind="image")
def mobilenet_v1(
    *,
    num_classes: int = 10,
    input_shape: tuple[int, int, int] = (3, 32, 32),
    width_mult: float = 0.25,
    stem_stride: int = 1,
    act: str = "relu",
) -> nn.Module:
    """Stem 3×3 conv (32·width, stride `stem_stride`) then 13 depthwise-separable blocks and a linear head."""
    check_int("stem_stride", stem_stride, 1, 2)
    check_act(act)
    check_input_size(input_shape, 8 * stem_stride, "mobilenet_v1")
    c = scaled(32, width_mult)
    layers: list[nn.Module] = [ConvBNAct(input_shape[0], c, 3, stem_stride, act=act)]
    for out, stride in _BLOCKS:
        layers.append(DepthwiseSeparable(c, scaled(out, width_mult), stride, act=act))
        c = scaled(out, width_mult)
    return Classifier(nn.Sequential(*layers), c, num_classes)
