"""Activation-range calibrators for uint8 quantization (registered): min-max, percentile, MSE and entropy (KL).

Each works on a `TensorHistogram` of one tensor's values over the calibration set and learns `low_`/`high_`,
the float range that maps onto [0, 255]; the range always contains 0 so that 0 is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from devicefit.core import DataError, NotFittedError, Registry, check_positive, check_range

__all__ = ["CALIBRATORS", "Calibrator", "EntropyCalibrator", "MSECalibrator", "MinMaxCalibrator",
           "PercentileCalibrator", "TensorHistogram", "list_calibrators", "make_calibrator"]

LEVELS = 256  # uint8


@dataclass(frozen=True)
class TensorHistogram:
    """Counts of one tensor's values in `len(counts)` equal bins over [lo, hi] (lo <= 0 <= hi)."""

    counts: np.ndarray
    lo: float
    hi: float

    @classmethod
    def from_values(cls, values: list[np.ndarray] | np.ndarray, bins: int = 2048) -> TensorHistogram:
        arrays = values if isinstance(values, list) else [values]
        lo = min(0.0, *(float(a.min()) for a in arrays))
        hi = max(0.0, *(float(a.max()) for a in arrays))
        if hi - lo <= 0:
            hi = lo + 1e-8
        counts = sum(np.histogram(a, bins=bins, range=(lo, hi))[0] for a in arrays)
        return cls(np.asarray(counts, dtype=np.float64), lo, hi)

    @property
    def centers(self) -> np.ndarray:
        edges = np.linspace(self.lo, self.hi, len(self.counts) + 1)
        return (edges[:-1] + edges[1:]) / 2


class Calibrator:
    """Base: `fit(hist)` learns `low_ <= 0 <= high_` and returns self; `range` reads them (NotFittedError
    before `fit`). Subclasses implement `_fit(hist) -> (low, high)`."""

    name = "base"

    def fit(self, hist: TensorHistogram) -> Calibrator:
        if not isinstance(hist, TensorHistogram) or hist.counts.sum() <= 0:
            raise DataError(f"{self.name} calibrator needs a non-empty TensorHistogram, got {hist!r:.80}")
        low, high = self._fit(hist)
        self.low_, self.high_ = min(0.0, float(low)), max(0.0, float(high))
        return self

    @property
    def range(self) -> tuple[float, float]:
        if not hasattr(self, "low_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit(hist) first")
        return self.low_, self.high_

    def _fit(self, hist: TensorHistogram) -> tuple[float, float]:
        raise NotImplementedError


CALIBRATORS: Registry[type[Calibrator]] = Registry("calibrator")


@CALIBRATORS.register("minmax")
class MinMaxCalibrator(Calibrator):
    """The observed minimum and maximum (no clipping)."""

    name = "minmax"

    def _fit(self, hist: TensorHistogram) -> tuple[float, float]:
        nz = np.flatnonzero(hist.counts)
        edges = np.linspace(hist.lo, hist.hi, len(hist.counts) + 1)
        return edges[nz[0]], edges[nz[-1] + 1]


@CALIBRATORS.register("percentile")
class PercentileCalibrator(Calibrator):
    """Clip to the `percentile` (upper) and 100 - `percentile` (lower) percentiles of the values."""

    name = "percentile"

    def __init__(self, percentile: float = 99.99) -> None:
        check_range("percentile", percentile, 50.0, 100.0, inclusive=True)
        self.percentile = percentile

    def _fit(self, hist: TensorHistogram) -> tuple[float, float]:
        cdf = np.cumsum(hist.counts) / hist.counts.sum()
        edges = np.linspace(hist.lo, hist.hi, len(hist.counts) + 1)
        q = self.percentile / 100.0
        hi_idx = int(np.searchsorted(cdf, q))
        lo_idx = int(np.searchsorted(cdf, 1.0 - q))
        return edges[lo_idx] if hist.lo < 0 else 0.0, edges[min(hi_idx + 1, len(edges) - 1)]


def _expected_sq_error(hist: TensorHistogram, low: float, high: float) -> float:
    """E[(x - Q(x))²] under the histogram for a uint8 grid on [low, high]: clipping error outside,
    uniform rounding error Δ²/12 inside."""
    x, c = hist.centers, hist.counts
    step = (high - low) / (LEVELS - 1)
    clipped = np.clip(x, low, high)
    inside = (x >= low) & (x <= high)
    err = (x - clipped) ** 2 + inside * step * step / 12.0
    return float((err * c).sum() / c.sum())


@CALIBRATORS.register("mse")
class MSECalibrator(Calibrator):
    """The range that minimises the expected squared quantization error, searched over `steps` scalings of
    the min-max range (both ends scaled together)."""

    name = "mse"

    def __init__(self, steps: int = 100) -> None:
        check_positive("steps", steps)
        self.steps = int(steps)

    def _fit(self, hist: TensorHistogram) -> tuple[float, float]:
        lo, hi = MinMaxCalibrator()._fit(hist)
        fracs = np.linspace(1.0 / self.steps, 1.0, self.steps)
        errs = [_expected_sq_error(hist, lo * f, hi * f) for f in fracs]
        f = fracs[int(np.argmin(errs))]
        return lo * f, hi * f


@CALIBRATORS.register("entropy")
class EntropyCalibrator(Calibrator):
    """Minimise KL(P || Q) between the histogram P of |x| and its 128-level quantized Q over candidate
    thresholds (the TensorRT int8 calibration algorithm, Migacz 2017); the range is [-t, t] ∩ observed sign."""

    name = "entropy"

    def __init__(self, levels: int = 128) -> None:
        check_positive("levels", levels)
        self.levels = int(levels)

    def _fit(self, hist: TensorHistogram) -> tuple[float, float]:
        absmax = max(-hist.lo, hist.hi)
        bins = len(hist.counts)
        p_all = np.histogram(np.abs(hist.centers), bins=bins, range=(0, absmax), weights=hist.counts)[0]
        p_all[0] = 0.0  # the zeros of a ReLU would dominate the divergence (pytorch-quantization: skip_zeros)
        best_i, best_kl = bins, np.inf
        for i in range(self.levels, bins + 1, max(1, bins // 256)):
            kl = _kl_at(p_all, i, self.levels)
            if kl < best_kl:
                best_i, best_kl = i, kl
        t = absmax * best_i / bins
        return (-t if hist.lo < 0 else 0.0), (t if hist.hi > 0 else 0.0)


def _kl_at(p_all: np.ndarray, i: int, levels: int) -> float:
    """KL(P || Q) for threshold bin `i`: P = the first `i` bins with the clipped mass added to the last; Q = the
    unclipped first `i` bins merged into `levels` groups, spread back over P's non-empty bins."""
    p = p_all[:i].copy()
    p[-1] += p_all[i:].sum()
    starts = np.linspace(0, i, levels + 1).astype(np.int64)
    nz = (p > 0).astype(np.float64)
    group_sum = np.add.reduceat(p_all[:i], starts[:-1])
    group_nz = np.add.reduceat(nz, starts[:-1])
    q = np.repeat(group_sum / np.maximum(group_nz, 1), np.diff(starts)) * nz
    p, q = p / p.sum(), q / max(q.sum(), 1e-12)
    mask = p > 0
    return float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))


def list_calibrators() -> list[str]:
    """Names of the registered calibrators."""
    return CALIBRATORS.names()


def make_calibrator(name: str, **options: float) -> Calibrator:
    """A new, unfitted calibrator registered as `name` (unknown → ConfigError listing the names)."""
    return CALIBRATORS.get(name)(**options)
