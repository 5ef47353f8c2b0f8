"""Activation range estimators for calibration (pluggable by registration): min-max and its moving average."""

from __future__ import annotations

import numpy as np

from devicefit.core import NotFittedError, Registry

__all__ = ["RANGE_ESTIMATORS", "EmaMinMax", "MinMax", "RangeEstimator", "qparams_from_range"]


class RangeEstimator:
    """Contract: `update(x)` once per calibration batch (any shape, float), then `range()` → (lo, hi)
    in real units; `range()` before any update raises `NotFittedError`."""

    def update(self, x: np.ndarray) -> None:
        raise NotImplementedError

    def range(self) -> tuple[float, float]:
        raise NotImplementedError


RANGE_ESTIMATORS: Registry[type[RangeEstimator]] = Registry("range estimator")


@RANGE_ESTIMATORS.register("minmax")
class MinMax(RangeEstimator):
    """The smallest and largest value seen over all calibration batches (TFLite's default)."""

    def __init__(self) -> None:
        self.lo_: float | None = None
        self.hi_: float | None = None

    def update(self, x: np.ndarray) -> None:
        lo, hi = float(np.min(x)), float(np.max(x))
        self.lo_ = lo if self.lo_ is None else min(self.lo_, lo)
        self.hi_ = hi if self.hi_ is None else max(self.hi_, hi)

    def range(self) -> tuple[float, float]:
        if self.lo_ is None or self.hi_ is None:
            raise NotFittedError("MinMax range: call update() with at least one calibration batch first")
        return self.lo_, self.hi_


@RANGE_ESTIMATORS.register("ema")
class EmaMinMax(MinMax):
    """Exponential moving average of per-batch min and max (TF quantization-aware training's observer)."""

    def __init__(self, momentum: float = 0.9) -> None:
        super().__init__()
        self.momentum = momentum

    def update(self, x: np.ndarray) -> None:
        lo, hi, m = float(np.min(x)), float(np.max(x)), self.momentum
        self.lo_ = lo if self.lo_ is None else m * self.lo_ + (1 - m) * lo
        self.hi_ = hi if self.hi_ is None else m * self.hi_ + (1 - m) * hi


def qparams_from_range(lo: float, hi: float) -> tuple[float, int]:
    """Asymmetric int8 (scale, zero_point) covering [min(lo, 0), max(hi, 0)] (so real 0 is exact); the scale
    is a float32 value, as a .tflite file stores it, so multipliers derived from it match TFLite's."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo < 1e-12:
        return 1.0, 0
    scale = float(np.float32((hi - lo) / 255.0))  # TFLite stores scales as float32; keep exactly those
    zero_point = int(np.clip(round(-128 - lo / scale), -128, 127))
    return scale, zero_point
