"""Fixed-point arithmetic of the TFLite int8 spec (gemmlowp semantics), vectorised over numpy int64.

These functions are the arithmetic the generated C performs; the integer reference executor is built
on them, so C and reference agree bit for bit by construction of the same formulas.
"""

from __future__ import annotations

import math

import numpy as np

from devicefit.core import ConfigError

__all__ = [
    "INT32_MAX",
    "INT32_MIN",
    "multiply_by_quantized_multiplier",
    "quantize_multiplier",
    "rounding_divide_by_pot",
    "saturating_rounding_doubling_high_mul",
]

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


def saturating_rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul: round(a·b / 2^31), ties toward +infinity (its nudge
    then truncation), saturating the single overflow case a = b = INT32_MIN to INT32_MAX. int32 values in, int64 out."""
    a64, b64 = np.asarray(a, np.int64), np.asarray(b, np.int64)
    ab = a64 * b64  # |ab| < 2^62: exact in int64
    neg = ab >> 63  # 0 where ab >= 0, -1 where ab < 0
    s = ab + ((1 << 30) + neg * ((1 << 31) - 1))  # nudge: 2^30, or 1 - 2^30 for negative products
    q = (s + ((s >> 63) & ((1 << 31) - 1))) >> 31  # s / 2^31 truncated toward zero, as C's `/`
    overflow = (a64 == INT32_MIN) & (b64 == INT32_MIN)
    return np.where(overflow, np.int64(INT32_MAX), q) if overflow.any() else q


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray | int) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT: x / 2^exponent rounded to nearest, ties away from zero (0 ≤ exponent ≤ 31)."""
    x64, e = np.asarray(x, np.int64), np.asarray(exponent, np.int64)
    mask = (np.int64(1) << e) - 1
    remainder = x64 & mask
    threshold = (mask >> 1) + (x64 < 0)
    return (x64 >> e) + (remainder > threshold)


def multiply_by_quantized_multiplier(x: np.ndarray, multiplier: np.ndarray | int,
                                     shift: np.ndarray | int) -> np.ndarray:
    """TFLite MultiplyByQuantizedMultiplier: x · multiplier · 2^(shift - 31), rounded as TFLite does.

    A positive `shift` is a left shift applied before the high multiply; the shifted value saturates to
    int32 (TFLite's int32 multiply would overflow there; the generated C saturates the same way).
    """
    shift = np.asarray(shift, np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    shifted = np.clip(np.asarray(x, np.int64) << left, INT32_MIN, INT32_MAX)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, multiplier), right)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite QuantizeMultiplier: `real` ≈ multiplier · 2^(shift - 31) with multiplier in [2^30, 2^31).

    Returns (multiplier, shift) as ints; 0 → (0, 0). Shifts below -31 flush to (0, 0) as TFLite does.
    """
    if not math.isfinite(real) or real < 0:
        raise ConfigError(f"real multiplier must be a finite number >= 0, got {real!r}")
    if real == 0.0:
        return 0, 0
    frac, shift = math.frexp(real)  # real = frac · 2^shift, frac in [0.5, 1)
    q = math.floor(frac * (1 << 31) + 0.5)  # std::round (half away from zero); frac · 2^31 is exact
    if q == (1 << 31):
        q //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        raise ConfigError(f"real multiplier {real!r} is too large for int32 fixed point (shift {shift} > 30)")
    return int(q), int(shift)
