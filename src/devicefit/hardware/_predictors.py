"""Latency predictors behind one interface; importing this module registers `lut`, `mlp`, `gbdt` and
`transfer` in `PREDICTORS`."""

from ._predict_base import (
    FORMAT_VERSION,
    PREDICTORS,
    LatencyPredictor,
    list_predictors,
    load_predictor,
    register_predictor,
)
from ._predict_features import layer_features, nb201_live_edges
from ._predict_lut import LUTPredictor, ridge_cv
from ._predict_mlp import LatencyMLP, MLPPredictor

from ._predict_gbdt import GBDTPredictor  # isort: skip
from ._predict_transfer import TransferPredictor  # isort: skip

__all__ = [
    "FORMAT_VERSION",
    "PREDICTORS",
    "GBDTPredictor",
    "LUTPredictor",
    "LatencyMLP",
    "LatencyPredictor",
    "MLPPredictor",
    "TransferPredictor",
    "layer_features",
    "list_predictors",
    "load_predictor",
    "nb201_live_edges",
    "register_predictor",
    "ridge_cv",
]
