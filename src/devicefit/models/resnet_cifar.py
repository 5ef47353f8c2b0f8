"""A CIFAR-style ResNet of free depth and width per stage (the `resnet_cifar` search space's networks); with the
defaults (3, 3, 3) blocks of (16, 32, 64) channels it is ResNet-20, module for module."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from devicefit.core import ConfigError
from devicefit.nn import BasicBlock, ConvBNAct

from ._common import Classifier, check_act, check_input_size, scaled
from ._registry import register_model

__all__ = ["resnet_cifar"]

MAX_STAGES = 8
MAX_DEPTH = 64
MAX_CHANNELS = 4096


def _int_tuple(name: str, value: Any, low: int, high: int) -> tuple[int, ...]:
    """`value` as a non-empty tuple of ints in [low, high], else ConfigError naming `name` and the entry."""
    if not isinstance(value, Sequence) or isinstance(value, str) or not 1 <= len(value) <= MAX_STAGES:
        raise ConfigError(f"{name} must be a list of 1 to {MAX_STAGES} ints (one per stage), got {value!r}")
    for i, v in enumerate(value):
        if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
            raise ConfigError(f"{name}[{i}] must be an int in [{low}, {high}], got {v!r}")
    return tuple(value)


@register_model("resnet_cifar", description="CIFAR ResNet with per-stage depth and width (defaults: ResNet-20)",
                input_kind="image")
def resnet_cifar(
    *,
    depths: tuple[int, ...] = (3, 3, 3),
    channels: tuple[int, ...] = (16, 32, 64),
    num_classes: int = 10,
    input_shape: tuple[int, int, int] = (3, 32, 32),
    width_mult: float = 1.0,
    act: str = "relu",
) -> nn.Module:
    """Stem 3×3 conv to channels[0]; stage s: depths[s] `BasicBlock`s to channels[s], the first with stride 2
    for s > 0 (1×1 projection shortcut where the shape changes); `Classifier` head.

    `channels` are used as given at `width_mult` 1, else scaled by `make_divisible(c · width_mult, 8)`.
    Raises `ConfigError` naming `depths`, `channels` (with the bad index), `act` or `input_shape`.
    """
    depths = _int_tuple("depths", depths, 1, MAX_DEPTH)
    channels = _int_tuple("channels", channels, 1, MAX_CHANNELS)
    if len(channels) != len(depths):
        raise ConfigError(f"channels must have one entry per stage of depths ({len(depths)}), "
                          f"got {len(channels)}: {channels!r}")
    check_act(act)
    check_input_size(input_shape, 2 ** (len(depths) - 1), "resnet_cifar")
    widths = channels if width_mult == 1.0 else tuple(scaled(c, width_mult) for c in channels)
    c = widths[0]
    layers: list[nn.Module] = [ConvBNAct(input_shape[0], c, 3, 1, act=act)]
    for stage, (depth, out) in enumerate(zip(depths, widths, strict=True)):
        for i in range(depth):
            layers.append(BasicBlock(c, out, 2 if stage > 0 and i == 0 else 1, act=act))
            c = out
    return Classifier(nn.Sequential(*layers), c, num_classes)
