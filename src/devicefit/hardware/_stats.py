"""Summary statistics of repeated timings: median, p10/p90, coefficient of variation and a stability flag.

Pure numpy, no timing here, so the rules are tested on fixed arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from devicefit.core import ConfigError, DataError

__all__ = ["SampleStats", "summarize_samples"]


@dataclass(frozen=True)
class SampleStats:
    """Statistics of `n` samples in the samples' unit (ms for latency).

    `p10`/`p90` are linear-interpolated percentiles; `cv` = std / mean (std with ddof=1, 0 for n=1);
    `stable` is `cv <= max_cv`.
    """

    n: int
    median: float
    mean: float
    min: float
    max: float
    p10: float
    p90: float
    std: float
    cv: float
    max_cv: float
    stable: bool

    def to_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)


def summarize_samples(samples: Sequence[float] | np.ndarray, *, max_cv: float = 0.05) -> SampleStats:
    """Summarize positive finite `samples`; raises `DataError` if empty or non-finite, `ConfigError` on `max_cv`."""
    if isinstance(max_cv, bool) or not isinstance(max_cv, int | float) or not max_cv > 0:
        raise ConfigError(f"max_cv must be a number > 0, got {max_cv!r}")
    x = np.asarray(samples, dtype=np.float64).ravel()
    if x.size == 0:
        raise DataError("samples: expected at least one value, got none")
    if not np.all(np.isfinite(x)):
        raise DataError(f"samples: expected finite values, got {int(np.sum(~np.isfinite(x)))} non-finite")
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if x.size > 1 else 0.0
    cv = std / mean if mean > 0 else float("inf")
    p10, median, p90 = (float(v) for v in np.percentile(x, [10, 50, 90]))
    return SampleStats(n=int(x.size), median=median, mean=mean, min=float(x.min()), max=float(x.max()),
                       p10=p10, p90=p90, std=std, cv=cv, max_cv=float(max_cv), stable=bool(cv <= max_cv))
