"""An MCUNet-style network (Lin et al., 2020): MBConv blocks with mixed kernels 3/5/7 and expansions 3/4/6,
sized for a 256 KiB-SRAM microcontroller at 32×32 (total stride 8, no wide final conv)."""

from __future__ import annotations

from torch import nn

from devicefit.nn import ConvBNAct, InvertedResidual

from ._common import Classifier, check_act, check_input_size, scaled
from ._registry import register_model

__all__ = ["mcunet"]

# (kernel, expand_ratio, out_channels, stride), shaped like MCUNet's searched nets: large kernels and
# expansions where a stage downsamples, cheap 3×3/×3 blocks after.
_BLOCKS = (
    (3, 1, 8, 1),
    (7, 4, 16, 2), (3, 3, 16, 1),
    (5, 6, 24, 2), (5, 4, 24, 1), (3, 3, 24, 1),
    (7, 6, 40, 2), (5, 4, 40, 1), (3, 3, 40, 1),
    (5, 6, 48, 1), (3, 4, 48, 1),
    (7, 6, 96, 1), (5, 4, 96, 1), (3, 3, 96, 1),
)


@register_model("mcunet", description="MCUNet-style MBConv net, kernels 3/5/7, expansions 3/4/6, for 256 KiB MCUs",
                input_kind="image")
def mcunet(
    *,
    num_classes: int = 10,
    input_shape: tuple[int, int, int] = (3, 32, 32),
    width_mult: float = 1.0,
    se: bool = False,
    act: str = "relu6",
) -> nn.Module:
    """Stem 3×3 conv (16·width), 14 MBConv blocks (optionally with squeeze-excitation), linear head."""
    check_act(act)
    check_input_size(input_shape, 8, "mcunet")
    c = scaled(16, width_mult)
    layers: list[nn.Module] = [ConvBNAct(input_shape[0], c, 3, 1, act=act)]
    for k, e, out, s in _BLOCKS:
        out = scaled(out, width_mult)
        layers.append(InvertedResidual(c, out, s, expand_ratio=e, kernel_size=k, se=bool(se) and e > 1, act=act))
        c = out
    return Classifier(nn.Sequential(*layers), c, num_classes)
