"""`gbdt`: gradient-boosted trees (LightGBM) over layer features, boosted from a linear base.

The base is ridge regression (ms, alpha by leave-one-out) on standardised layer features; the trees
then fit the log-ratio of measured to base latency, which captures non-additive effects (operator
fusion, memory traffic, dead NB201 paths) without losing the additive structure at small sample sizes.
"""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np

from ._encoding import CellEncoding
from ._predict_base import LatencyPredictor, register_predictor
from ._predict_features import layer_features
from ._predict_lut import ridge_cv

__all__ = ["GBDTPredictor"]


@register_predictor("gbdt")
class GBDTPredictor(LatencyPredictor):
    """LightGBM on `layer_features`, deterministic (`deterministic=True`, fixed seed, ≤ 2 threads)."""

    def __init__(self, n_estimators: int = 200, learning_rate: float = 0.05, num_leaves: int = 15,
                 min_child_samples: int = 5, subsample: float = 0.8, colsample: float = 0.8,
                 l2: float = 1.0, num_threads: int = 1, seed: int = 0) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.colsample = colsample
        self.l2 = l2
        self.num_threads = num_threads
        self.seed = seed

    def _lgb_params(self) -> dict[str, Any]:
        return {
            "objective": "regression", "learning_rate": self.learning_rate, "num_leaves": self.num_leaves,
            "min_child_samples": self.min_child_samples, "min_child_weight": 1e-3, "lambda_l2": self.l2,
            "subsample": self.subsample, "subsample_freq": 1, "colsample_bytree": self.colsample,
            "deterministic": True, "force_row_wise": True, "num_threads": min(max(self.num_threads, 1), 2),
            "seed": self.seed, "verbose": -1,
        }

    def _fit(self, enc: CellEncoding, idx: np.ndarray, y_ms: np.ndarray) -> None:
        x = layer_features(enc, idx).astype(np.float64)
        self.feature_mean_ = x.mean(axis=0)
        self.feature_scale_ = x.std(axis=0) + 1e-9
        w, b, _, _ = ridge_cv((x - self.feature_mean_) / self.feature_scale_, y_ms)
        self.base_coef_, self.base_intercept_ = w, b
        self.floor_ms_ = 0.5 * float(y_ms.min())
        base = self._base_log(x)
        data = lgb.Dataset(x, np.log(y_ms), init_score=base, params={"min_data_in_bin": 1, "verbose": -1})
        booster = lgb.train(self._lgb_params(), data, num_boost_round=self.n_estimators)
        self.model_text_ = booster.model_to_string()
        self.booster_ = booster

    def _base_log(self, x: np.ndarray) -> np.ndarray:
        base = ((x - self.feature_mean_) / self.feature_scale_) @ self.base_coef_ + self.base_intercept_
        return np.log(np.maximum(base, self.floor_ms_))

    def _predict(self, enc: CellEncoding, idx: np.ndarray) -> np.ndarray:
        x = layer_features(enc, idx).astype(np.float64)
        return np.exp(self._base_log(x) + self.booster_.predict(x, num_threads=1))

    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {
            "feature_mean": self.feature_mean_.tolist(), "feature_scale": self.feature_scale_.tolist(),
            "base_coef": self.base_coef_.tolist(), "base_intercept": self.base_intercept_,
            "floor_ms": self.floor_ms_, "lightgbm_model": self.model_text_,
        }, {}

    def _set_state(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.feature_mean_ = np.asarray(state["feature_mean"], dtype=np.float64)
        self.feature_scale_ = np.asarray(state["feature_scale"], dtype=np.float64)
        self.base_coef_ = np.asarray(state["base_coef"], dtype=np.float64)
        self.base_intercept_ = float(state["base_intercept"])
        self.floor_ms_ = float(state["floor_ms"])
        self.model_text_ = str(state["lightgbm_model"])
        self.booster_ = lgb.Booster(model_str=self.model_text_)
