"""DS-CNN, the MLPerf Tiny keyword-spotting reference (Zhang et al., 2017): a strided 10×4 conv over MFCCs
(frames × coefficients), depthwise-separable blocks, global average pool, linear head."""

from __future__ import annotations

from typing import Any

from torch import nn

from devicefit.core import ConfigError
from devicefit.nn import ConvBNAct, DepthwiseSeparable

from ._common import Classifier, check_act, check_input_size, check_int, scaled
from ._registry import register_model

__all__ = ["dscnn"]


def _pair(name: str, value: Any, high: int) -> tuple[int, int]:
    ok = isinstance(value, tuple | list) and len(value) == 2
    if not ok or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= high for v in value):
        raise ConfigError(f"{name} must be 2 ints in [1, {high}], got {value!r}")
    return int(value[0]), int(value[1])


def _check_first_conv(input_shape: tuple[int, int, int], kernel: tuple[int, int], stride: tuple[int, int]) -> None:
    check_input_size(input_shape, stride, "dscnn")
    for axis, size, k in (("H", input_shape[1], kernel[0]), ("W", input_shape[2], kernel[1])):
        if size + 2 * ((k - 1) // 2) < k:  # the padded input must hold one kernel window
            raise ConfigError(f"input_shape {input_shape} is too small for dscnn's first_kernel {kernel}: "
                              f"{axis} must be >= {k - 2 * ((k - 1) // 2)}, got {size}")


@register_model("dscnn", description="MLPerf Tiny DS-CNN keyword spotter: 10×4/2 conv, 4 DS blocks, 64 channels",
                input_kind="audio")
def dscnn(
    *,
    num_classes: int = 10,
    input_shape: tuple[int, int, int] = (1, 49, 10),
    width_mult: float = 1.0,
    channels: int = 64,
    num_blocks: int = 4,
    first_kernel: tuple[int, int] = (10, 4),
    first_stride: tuple[int, int] = (2, 2),
    act: str = "relu",
) -> nn.Module:
    """(B, C, frames, coeffs) → (B, num_classes); also runs on log-mel (1, 49, 40) and images (3, 32, 32).

    First conv `first_kernel`/`first_stride` with padding (k-1)//2 to `channels`·width, then `num_blocks`
    depthwise(3×3)-separable blocks at stride 1.
    """
    kernel, stride = _pair("first_kernel", first_kernel, 15), _pair("first_stride", first_stride, 4)
    check_int("channels", channels, 1, 1024)
    check_int("num_blocks", num_blocks, 0, 16)
    check_act(act)
    _check_first_conv(input_shape, kernel, stride)
    c = scaled(channels, width_mult)
    layers: list[nn.Module] = [ConvBNAct(input_shape[0], c, kernel, stride, act=act)]
    layers += [DepthwiseSeparable(c, c, 1, act=act) for _ in range(num_blocks)]
    return Classifier(nn.Sequential(*layers), c, num_classes)
