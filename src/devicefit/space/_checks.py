"""Argument checks shared by the space builders; errors name the parameter, the expectation and the value."""

from __future__ import annotations

from collections.abc import Sequence

from devicefit.core import ConfigError, check_int

__all__ = ["check_image_shape", "check_int"]


def check_image_shape(input_shape: Sequence[int], min_size: int, family: str) -> tuple[int, int, int]:
    """`input_shape` as (C, H, W) positive ints with H, W >= `min_size`, else ConfigError."""
    shape = tuple(input_shape) if isinstance(input_shape, Sequence) and not isinstance(input_shape, str) else ()
    if len(shape) != 3 or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise ConfigError(f"input_shape must be (C, H, W) positive ints, got {input_shape!r}")
    if min(shape[1:]) < min_size:
        raise ConfigError(f"input_shape {shape} is too small for {family}: H and W must be >= {min_size}")
    return shape  # type: ignore[return-value]
