"""`lut`: per-layer lookup table + bias (HSCoNAS-style): latency = b + Σ_positions LUT[position, op]."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._encoding import CellEncoding
from ._predict_base import LatencyPredictor, register_predictor

__all__ = ["ALPHA_GRID", "LUTPredictor", "ridge_cv", "ridge_fit"]

ALPHA_GRID = tuple(10.0**k for k in range(-6, 4))


def ridge_fit(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """(weights, intercept) of ridge regression with an unpenalised intercept."""
    return ridge_cv(x, y, (alpha,))[:2]


def ridge_cv(x: np.ndarray, y: np.ndarray, alphas: tuple[float, ...] = ALPHA_GRID
             ) -> tuple[np.ndarray, float, float, float]:
    """Ridge with an unpenalised intercept, alpha picked by exact leave-one-out error (via the SVD).

    Returns (weights, intercept, alpha, leave-one-out RMSE). Ties go to the smallest alpha.
    """
    n = len(y)
    x_mean, y_mean = x.mean(axis=0), y.mean()
    xc, yc = x - x_mean, y - y_mean
    if n > x.shape[1]:  # eigen-decomposition of the small Gram matrix: XV = US
        s2, v = np.linalg.eigh(xc.T @ xc)
        s2 = np.maximum(s2, 0.0)
        xv = xc @ v
    else:
        u, s, vt = np.linalg.svd(xc, full_matrices=False)
        s2, v, xv = s**2, vt.T, u * s
    xty = v.T @ (xc.T @ yc)
    best: tuple[float, float, np.ndarray] | None = None
    for alpha in alphas:
        coef = xty / (s2 + alpha)
        hat = (xv**2) @ (1.0 / (s2 + alpha)) + 1.0 / n  # diagonal of the hat matrix, intercept included
        loo = (yc - xv @ coef) / np.maximum(1.0 - hat, 1e-9)
        rmse = float(np.sqrt(np.mean(loo**2)))
        if best is None or rmse < best[0] * (1 - 1e-9):
            best = (rmse, alpha, v @ coef)
    assert best is not None
    rmse, alpha, w = best
    return w, float(y_mean - x_mean @ w), alpha, rmse


@register_predictor("lut")
class LUTPredictor(LatencyPredictor):
    """Ridge least squares on the one-hot (ms space: layer latencies add up).

    `alpha` is the ridge penalty (in ms²), or None to pick it from `ALPHA_GRID` by leave-one-out error.
    A (position, op) pair absent from the training specs gets the op's mean entry over the positions
    where it was seen (0 when never seen).
    """

    def __init__(self, alpha: float | None = None, min_latency_ms: float = 1e-3) -> None:
        self.alpha = alpha
        self.min_latency_ms = min_latency_ms

    def _fit(self, enc: CellEncoding, idx: np.ndarray, y_ms: np.ndarray) -> None:
        n_ops = len(enc.ops)
        onehot = np.eye(n_ops)[idx].reshape(len(idx), -1)
        w, b, self.alpha_, _ = ridge_cv(onehot, y_ms, ALPHA_GRID if self.alpha is None else (self.alpha,))
        table = w.reshape(enc.n_positions, n_ops)
        seen = onehot.reshape(len(idx), enc.n_positions, n_ops).any(axis=0)
        op_mean = np.where(seen, table, 0.0).sum(0) / np.maximum(seen.sum(0), 1)
        self.table_ms_ = np.where(seen, table, op_mean[None, :])
        self.bias_ms_ = b

    def _predict(self, enc: CellEncoding, idx: np.ndarray) -> np.ndarray:
        pos = np.arange(enc.n_positions)[None, :]
        return np.maximum(self.bias_ms_ + self.table_ms_[pos, idx].sum(axis=1), self.min_latency_ms)

    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"bias_ms": self.bias_ms_, "table_ms": self.table_ms_.tolist(), "alpha": self.alpha_}, {}

    def _set_state(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.bias_ms_ = float(state["bias_ms"])
        self.alpha_ = float(state["alpha"])
        self.table_ms_ = np.asarray(state["table_ms"], dtype=np.float64)
