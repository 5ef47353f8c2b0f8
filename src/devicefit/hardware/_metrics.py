"""Accuracy of latency predictions on held-out architectures: error, relative-error shares and rank
correlation (the figures nn-Meter, HELP and BRP-NAS report)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy import stats

from devicefit.core import DataError

__all__ = ["evaluate_predictions"]


def evaluate_predictions(y_true_ms: Any, y_pred_ms: Any) -> dict[str, float]:
    """Metrics of predicted vs measured latencies (both in ms, same length ≥ 2, measured > 0).

    Returns `rmse_ms`, `mape` (fraction), `within_5` / `within_10` (fractions of |pred/true − 1| ≤
    0.05 / 0.10), `spearman`, `kendall` (0.0 when either side is constant: no ranking information)
    and `n`.
    """
    y_true, y_pred = _check(y_true_ms, y_pred_ms)
    rel = np.abs(y_pred / y_true - 1.0)
    return {
        "rmse_ms": float(np.sqrt(np.mean((y_pred - y_true) ** 2))),
        "mape": float(rel.mean()),
        "within_5": float(np.mean(rel <= 0.05 + 1e-12)),
        "within_10": float(np.mean(rel <= 0.10 + 1e-12)),
        "spearman": _rank_corr(stats.spearmanr, y_true, y_pred),
        "kendall": _rank_corr(stats.kendalltau, y_true, y_pred),
        "n": len(y_true),
    }


def _check(y_true_ms: Any, y_pred_ms: Any) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true_ms, dtype=np.float64).ravel()
    y_pred = np.asarray(y_pred_ms, dtype=np.float64).ravel()
    if y_true.shape != y_pred.shape:
        raise DataError(f"y_true_ms and y_pred_ms must have the same length, got {len(y_true)} and {len(y_pred)}")
    if len(y_true) < 2:
        raise DataError(f"need at least 2 predictions to evaluate, got {len(y_true)}")
    if not (np.isfinite(y_true).all() and (y_true > 0).all()):
        raise DataError("y_true_ms must be finite and > 0 (ms)")
    if not np.isfinite(y_pred).all():
        raise DataError("y_pred_ms must be finite")
    return y_true, y_pred


def _rank_corr(fn: Any, a: np.ndarray, b: np.ndarray) -> float:
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = float(fn(a, b)[0])
    return value if np.isfinite(value) else 0.0
