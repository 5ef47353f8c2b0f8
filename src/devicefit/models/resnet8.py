"""ResNet-8, the MLPerf Tiny image-classification reference: 16/32/64 channels, one basic block per stage."""

from __future__ import annotations

from torch import nn

from ._registry import register_model
from ._resnet import cifar_resnet

__all__ = ["resnet8"]


@register_model("resnet8", description="MLPerf Tiny ResNet-8: 3 stages × 1 basic block, 16/32/64 channels",
                input_kind="image")
def resnet8(
    *,
    num_classes: int = 10,
    input_shape: tuple[int, int, int] = (3, 32, 32),
    width_mult: float = 1.0,
    act: str = "relu",
) -> nn.Module:
    """Stem 3×3 conv (16), basic blocks 16 (s1), 32 (s2), 64 (s2) with projection shortcuts, linear head."""
    return cifar_resnet(name="resnet8", blocks_per_stage=1, widths=(16, 32, 64), num_classes=num_classes,
                        input_shape=input_shape, width_mult=width_mult, act=act)
