"""`transfer`: few-shot latency prediction on a new device (HELP-style), using the other devices of a
measured table as the prior: the target log-latency is a ridge fit on the log-latencies of the few most
predictive source devices, chosen by leave-one-out error on the handful of measured samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from devicefit.core import ConfigError

from ._encoding import CellEncoding
from ._predict_base import PREDICTORS, LatencyPredictor, register_predictor
from ._predict_lut import ridge_cv
from ._tables import LatencyTable

__all__ = ["TransferPredictor"]


@register_predictor("transfer")
class TransferPredictor(LatencyPredictor):
    """Few-shot predictor for a target device from source device columns of `source`.

    `exclude` names the target column(s) (and any other column not to use). Features of an arch are its
    log-latencies on the selected source columns: looked up in `source` when the arch is a row, else
    predicted by a `source_model` predictor fitted on the whole source column. Sources are ranked by the
    leave-one-out RMSE of a one-source fit and added greedily (at most `max_sources`) while the
    leave-one-out RMSE improves by more than `min_gain`. Saved files carry the selected columns' lookup
    (sibling .npz) and source models, so a loaded predictor needs no table.
    """

    min_samples = 3

    def __init__(self, source: LatencyTable | None = None, exclude: Sequence[str] = (), max_sources: int = 3,
                 min_gain: float = 0.02, source_model: str = "lut", include_estimated: bool = False) -> None:
        self.source = source
        self.exclude = (exclude,) if isinstance(exclude, str) else tuple(exclude)
        self.max_sources = max_sources
        self.min_gain = min_gain
        self.source_model = source_model
        self.include_estimated = include_estimated

    # -- fitting ----------------------------------------------------------------------------------

    def _fit(self, enc: CellEncoding, idx: np.ndarray, y_ms: np.ndarray) -> None:
        table = self._table(enc)
        candidates = self._candidates(table)
        self.source_description_ = table.source
        self._index_table(enc, table, candidates)
        self.source_models_: dict[str, LatencyPredictor] = {}
        feats = self._source_log(enc, idx, candidates)
        self.sources_ = _select_sources(feats, np.log(y_ms), candidates, self.max_sources, self.min_gain)
        cols = [candidates.index(c) for c in self.sources_]
        w, b, self.alpha_, self.loo_rmse_ = ridge_cv(feats[:, cols], np.log(y_ms))
        self.coef_, self.intercept_ = w, b
        self.lookup_log_ = self.lookup_log_[:, cols]
        self.lookup_columns_ = list(self.sources_)

    def _table(self, enc: CellEncoding) -> LatencyTable:
        if self.source is None:
            raise ConfigError("transfer predictor needs source=LatencyTable (the prior devices) to fit")
        if self.source.family != enc.family:
            raise ConfigError(f"transfer source table {self.source.source!r} is {self.source.family!r}, "
                              f"specs are {enc.family!r}")
        return self.source

    def _candidates(self, table: LatencyTable) -> list[str]:
        unknown = [c for c in self.exclude if c not in table.latency_ms]
        if unknown:
            raise ConfigError(f"exclude names column(s) {unknown} not in {table.source!r}")
        pool = list(table.latency_ms) if self.include_estimated else table.measured_columns()
        candidates = [c for c in pool if c not in self.exclude]
        if not candidates:
            raise ConfigError(f"no source columns left in {table.source!r} after excluding {list(self.exclude)}")
        return candidates

    def _index_table(self, enc: CellEncoding, table: LatencyTable, columns: list[str]) -> None:
        self.lookup_idx_ = enc.indices(list(table.specs))
        self.lookup_log_ = np.log(np.stack([table.column(c) for c in columns], axis=1))
        self.lookup_columns_ = list(columns)
        self.lookup_rows_ = {row.astype(np.int8).tobytes(): i for i, row in enumerate(self.lookup_idx_)}

    # -- source features --------------------------------------------------------------------------

    def _source_log(self, enc: CellEncoding, idx: np.ndarray, columns: list[str]) -> np.ndarray:
        """(N, len(columns)) source log-latencies: table lookup, else the source models' predictions."""
        rows = np.array([self.lookup_rows_.get(r.astype(np.int8).tobytes(), -1) for r in idx])
        col_pos = [self.lookup_columns_.index(c) for c in columns]
        out = np.zeros((len(idx), len(columns)))
        found = rows >= 0
        out[found] = self.lookup_log_[rows[found]][:, col_pos]
        if not found.all():
            for k, c in enumerate(columns):
                out[~found, k] = np.log(self._source_predictor(enc, c)._predict(enc, idx[~found]))
        return out

    def _source_predictor(self, enc: CellEncoding, column: str) -> LatencyPredictor:
        if column not in self.source_models_:
            if self.source is None:
                raise ConfigError(f"transfer predictor has no source model for {column!r} and no source table")
            model = PREDICTORS.get(self.source_model)()
            self.source_models_[column] = model.fit(list(self.source.specs), self.source.column(column))
        return self.source_models_[column]

    def _predict(self, enc: CellEncoding, idx: np.ndarray) -> np.ndarray:
        feats = self._source_log(enc, idx, self.sources_)
        return np.exp(feats @ self.coef_ + self.intercept_)

    # -- persistence ------------------------------------------------------------------------------

    def _json_params(self) -> dict[str, Any]:
        params = self.get_params()
        params.pop("source")
        return {**params, "exclude": list(self.exclude)}

    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        enc = self.encoding_
        models = {c: self._source_predictor(enc, c) for c in self.sources_}
        state = {
            "sources": self.sources_, "coef": self.coef_.tolist(), "intercept": self.intercept_,
            "alpha": self.alpha_, "loo_rmse": self.loo_rmse_, "source_description": self.source_description_,
            "source_models": {c: {"kind": m.kind, "params": m._json_params(), "state": m._get_state()[0]}
                              for c, m in models.items()},
        }
        return state, {"lookup_idx": self.lookup_idx_.astype(np.int8), "lookup_log": self.lookup_log_}

    def _set_state(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.sources_ = [str(c) for c in state["sources"]]
        self.coef_ = np.asarray(state["coef"], dtype=np.float64)
        self.intercept_ = float(state["intercept"])
        self.alpha_, self.loo_rmse_ = float(state["alpha"]), float(state["loo_rmse"])
        self.source_description_ = str(state["source_description"])
        self.lookup_idx_ = arrays["lookup_idx"].astype(np.int64)
        self.lookup_log_ = np.asarray(arrays["lookup_log"], dtype=np.float64)
        self.lookup_columns_ = list(self.sources_)
        self.lookup_rows_ = {row.astype(np.int8).tobytes(): i for i, row in enumerate(self.lookup_idx_)}
        self.source_models_ = {c: _rebuild(m) for c, m in state["source_models"].items()}


def _rebuild(saved: dict[str, Any]) -> LatencyPredictor:
    model = PREDICTORS.get(saved["kind"])(**saved["params"])
    model._set_state(saved["state"], {})
    return model


def _select_sources(feats: np.ndarray, log_y: np.ndarray, names: list[str], max_sources: int,
                    min_gain: float) -> list[str]:
    """Greedy forward selection by leave-one-out RMSE (best single source first)."""
    single = [ridge_cv(feats[:, [k]], log_y)[3] for k in range(len(names))]
    order = list(np.argsort(single, kind="stable"))
    chosen, best = [order[0]], single[order[0]]
    for k in order[1:2 * max_sources]:
        if len(chosen) >= max_sources or len(chosen) + 2 > len(log_y):
            break
        rmse = ridge_cv(feats[:, [*chosen, k]], log_y)[3]
        if rmse < best * (1 - min_gain):
            chosen, best = [*chosen, k], rmse
    return [names[k] for k in chosen]
