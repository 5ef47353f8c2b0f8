"""Helpers shared by the zoo's families: the classifier head, width scaling and input-size checks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from devicefit.core import ConfigError, check_choice
from devicefit.nn import ACTIVATIONS, make_divisible

__all__ = ["Classifier", "check_act", "check_input_size", "check_int", "last_width", "scaled"]


class Classifier(nn.Module):
    """`features` → global average pool → flatten → linear: (B, C, H, W) → (B, num_classes)."""

    def __init__(self, features: nn.Module, channels: int, num_classes: int) -> None:
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, C, h, w)
        return self.fc(self.flatten(self.pool(x)))  # (B, num_classes)


def scaled(channels: int, width_mult: float, divisor: int = 8) -> int:
    """`channels · width_mult` rounded by `make_divisible`."""
    return make_divisible(channels * width_mult, divisor)


def check_input_size(input_shape: Sequence[int], total_stride: int | tuple[int, int], model: str) -> None:
    """Raise unless H and W are at least the network's total stride (so the last map keeps real pixels)."""
    sh, sw = (total_stride, total_stride) if isinstance(total_stride, int) else total_stride
    _, h, w = input_shape
    if h < sh or w < sw:
        raise ConfigError(f"input_shape {tuple(input_shape)} is too small for {model}: its total stride is "
                          f"{sh}×{sw}, so H must be >= {sh} and W >= {sw}")


def check_act(act: Any) -> None:
    check_choice("act", act, ACTIVATIONS.names())


def check_int(name: str, value: Any, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"{name} must be an int in [{low}, {high}], got {value!r}")


def last_width(last_channels: Any, base: int, width_mult: float) -> int:
    """Channels of the final 1×1 conv: `last_channels`, or `base · width_mult` when None.

    The papers keep the full `base` for widths below 1; an MCU cannot afford that, so it scales too.
    """
    if last_channels is None:
        return make_divisible(base * width_mult)
    check_int("last_channels", last_channels, 8, 4096)
    return int(last_channels)
