"""The CIFAR-style ResNet skeleton shared by `resnet8` and `resnet20`: a 3×3 stem, stages of basic blocks."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from devicefit.nn import BasicBlock, ConvBNAct

from ._common import Classifier, check_act, check_input_size, scaled

__all__ = ["cifar_resnet"]


def cifar_resnet(
    *,
    name: str,
    blocks_per_stage: int,
    widths: Sequence[int],
    num_classes: int,
    input_shape: tuple[int, int, int],
    width_mult: float,
    act: str,
) -> nn.Module:
    """Stem 3×3 conv (widths[0]) then one stage per width (stride 1, then 2, 2, ...) of basic blocks."""
    check_act(act)
    check_input_size(input_shape, 2 ** (len(widths) - 1), name)
    c = scaled(widths[0], width_mult)
    layers: list[nn.Module] = [ConvBNAct(input_shape[0], c, 3, 1, act=act)]
    for stage, width in enumerate(widths):
        out = scaled(width, width_mult)
        for i in range(blocks_per_stage):
            layers.append(BasicBlock(c, out, 2 if stage > 0 and i == 0 else 1, act=act))
            c = out
    return Classifier(nn.Sequential(*layers), c, num_classes)
