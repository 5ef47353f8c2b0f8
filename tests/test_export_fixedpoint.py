"""Fixed-point primitives of the TFLite int8 spec against exact big-integer arithmetic."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from devicefit.core import ConfigError
from devicefit.export import (
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)

I32_MIN, I32_MAX = -(2**31), 2**31 - 1


def _round_half_away(q: Fraction) -> int:
    return math.floor(q + Fraction(1, 2)) if q >= 0 else -math.floor(-q + Fraction(1, 2))


def _exact_srdhm(a: int, b: int) -> int:
    """round(a·b / 2^31) with ties toward +infinity, saturated to int32: what gemmlowp's nudge-then-truncate
    computes (a negative tie -k - 1/2 becomes -k)."""
    return max(I32_MIN, min(I32_MAX, math.floor(Fraction(a * b, 2**31) + Fraction(1, 2))))


def _exact_rdbpot(x: int, e: int) -> int:
    return _round_half_away(Fraction(x, 2**e))


def _int32_samples(rng: np.random.Generator, n: int) -> np.ndarray:
    edges = np.array([I32_MIN, I32_MIN + 1, -1, 0, 1, 2**30, -(2**30), I32_MAX, I32_MAX - 1], np.int64)
    return np.concatenate([edges, rng.integers(I32_MIN, I32_MAX, n, endpoint=True, dtype=np.int64),
                           rng.integers(-300, 300, n, dtype=np.int64)])


def test_srdhm_equals_exact_rounding_of_the_product() -> None:
    rng = np.random.default_rng(0)
    a = _int32_samples(rng, 3000)
    b = rng.permutation(_int32_samples(rng, 3000))
    got = saturating_rounding_doubling_high_mul(a, b)
    want = [_exact_srdhm(int(x), int(y)) for x, y in zip(a, b, strict=True)]
    assert got.tolist() == want
    assert saturating_rounding_doubling_high_mul(np.int64(I32_MIN), np.int64(I32_MIN)) == I32_MAX
    ties = np.array([3 << 30, -(3 << 30)], np.int64)  # ±1.5 · 2^31 as products a·1
    assert saturating_rounding_doubling_high_mul(ties, np.ones(2, np.int64)).tolist() == [2, -1]


def test_rounding_divide_by_pot_rounds_half_away_from_zero() -> None:
    rng = np.random.default_rng(1)
    x = _int32_samples(rng, 2000)
    for e in (0, 1, 2, 7, 20, 31):
        got = rounding_divide_by_pot(x, e)
        assert got.tolist() == [_exact_rdbpot(int(v), e) for v in x], e
    assert rounding_divide_by_pot(np.array([5, -5, 6, -6, 7, -7]), 1).tolist() == [3, -3, 3, -3, 4, -4]


@pytest.mark.parametrize("real", [1e-9, 0.000123, 0.0078125, 0.3, 0.5, 0.7, 0.999999999, 1.0, 1.5, 3.25, 1000.0])
def test_quantize_multiplier_represents_the_real_within_half_an_lsb(real: float) -> None:
    m, shift = quantize_multiplier(real)
    assert 2**30 <= m < 2**31
    assert abs(Fraction(m) * Fraction(2) ** (shift - 31) - Fraction(real)) <= Fraction(2) ** (shift - 32)


def test_quantize_multiplier_edges() -> None:
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(2.0**-40) == (0, 0)  # TFLite flushes shifts below -31 to zero
    assert quantize_multiplier(1.0) == (2**30, 1)
    with pytest.raises(ConfigError, match="real multiplier"):
        quantize_multiplier(-0.5)
    with pytest.raises(ConfigError, match="too large"):
        quantize_multiplier(2.0**40)


def test_multiply_by_quantized_multiplier_matches_the_tflite_composition() -> None:
    rng = np.random.default_rng(2)
    x = rng.integers(-(2**20), 2**20, 500, dtype=np.int64)
    for real in (0.0003, 0.02, 0.49, 0.9, 1.7, 6.0):
        m, shift = quantize_multiplier(real)
        got = multiply_by_quantized_multiplier(x, m, shift)
        left, right = max(shift, 0), max(-shift, 0)
        want = [_exact_rdbpot(_exact_srdhm(max(I32_MIN, min(I32_MAX, int(v) << left)), m), right) for v in x]
        assert got.tolist() == want
        assert np.max(np.abs(got - x * real)) <= 1 + np.max(np.abs(x)) * real * 2.0**-30  # ≈ x · real
