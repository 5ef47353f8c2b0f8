"""ResNet-20 for CIFAR (He et al., 2016, section 4.2): 3 stages × 3 basic blocks, 16/32/64 channels."""

from __future__ import annotations

from torch import nn

from ._registry import register_model
from ._resnet import cifar_resnet

__all__ = ["resnet20"]


@register_model("resnet20", description="CIFAR ResNet-20 (He et al.): 3 stages × 3 basic blocks, 16/32/64 channels",
                input_kind="image")
def resnet20(
    *,
    num_classes: int = 10,
    input_shape: tuple[int, int, int] = (3, 32, 32),
    width_mult: float = 1.0,
    act: str = "relu",
) -> nn.Module:
    """Stem 3×3 conv (16), 3×3 basic blocks 16, 32 (s2), 64 (s2); projection (1×1 conv) shortcuts, head."""
    return cifar_resnet(name="resnet20", blocks_per_stage=3, widths=(16, 32, 64), num_classes=num_classes,
                        input_shape=input_shape, width_mult=width_mult, act=act)
