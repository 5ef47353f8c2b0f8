"""Unstructured magnitude pruning, reported honestly: zeroed weights shrink a model only when it is stored
sparse, and a dense runtime (ONNX Runtime, CMSIS-NN) multiplies the zeros anyway, so latency does not drop."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from devicefit.core import ConfigError, NotFittedError, check_range

from ._registry import PRUNERS

__all__ = ["MagnitudeConfig", "MagnitudePruner", "sparse_storage_bytes"]

DENSE_SPEEDUP_NOTE = ("zeros are still stored and multiplied by dense runtimes (ONNX Runtime, CMSIS-NN): "
                      "expect no latency gain; only sparse storage shrinks the model")


@dataclass(frozen=True)
class MagnitudeConfig:
    """sparsity: fraction of Conv2d/Linear weights set to zero, in (0, 1); global_ranking: one threshold over
    all layers (else per layer); value_bytes: bytes per stored weight (4 fp32, 1 int8) for the size report."""

    sparsity: float = 0.5
    global_ranking: bool = True
    value_bytes: int = 1

    def __post_init__(self) -> None:
        check_range("sparsity", self.sparsity, 0.0, 1.0)
        if self.value_bytes not in (1, 2, 4):
            raise ConfigError(f"value_bytes must be 1, 2 or 4, got {self.value_bytes!r}")


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def sparse_storage_bytes(weight: torch.Tensor, value_bytes: int) -> int:
    """CSR bytes of `weight` seen as (out, rest): non-zeros × (value + column index) + (rows + 1) × 4-byte
    row pointers; column indices take 2 bytes when a row has < 65,536 columns, else 4."""
    rows = weight.shape[0]
    cols = weight[0].numel()
    nnz = int(torch.count_nonzero(weight))
    return nnz * (value_bytes + (2 if cols < 65536 else 4)) + (rows + 1) * 4


@PRUNERS.register("magnitude")
class MagnitudePruner:
    """Estimator: `fit(model)` zeroes the smallest-|w| weights of a copy and stores `model_` and `report_`
    (sparsity reached, dense vs sparse bytes, and the note that dense runtimes gain no speed)."""

    def __init__(self, config: MagnitudeConfig | None = None) -> None:
        self.config = config or MagnitudeConfig()

    @torch.no_grad()
    def fit(self, model: nn.Module) -> MagnitudePruner:
        cfg = self.config
        net = copy.deepcopy(model)
        weights = _weights(net)
        if not weights:
            raise ConfigError(f"{type(model).__name__} has no Conv2d/Linear weights to prune")
        if cfg.global_ranking:
            threshold = torch.quantile(torch.cat([w.abs().flatten() for w in weights]).float(), cfg.sparsity)
            for w in weights:
                w.masked_fill_(w.abs() <= threshold, 0.0)
        else:
            for w in weights:
                w.masked_fill_(w.abs() <= torch.quantile(w.abs().flatten().float(), cfg.sparsity), 0.0)
        self.model_ = net
        self.report_ = self._report(weights)
        return self

    def _report(self, weights: list[torch.Tensor]) -> dict[str, Any]:
        total = sum(w.numel() for w in weights)
        nnz = sum(int(torch.count_nonzero(w)) for w in weights)
        vb = self.config.value_bytes
        return {"sparsity": 1 - nnz / total, "weights": total, "nonzero_weights": nnz,
                "dense_bytes": total * vb, "sparse_bytes": sum(sparse_storage_bytes(w, vb) for w in weights),
                "value_bytes": vb, "note": DENSE_SPEEDUP_NOTE}

    @property
    def report(self) -> dict[str, Any]:
        if not hasattr(self, "report_"):
            raise NotFittedError("MagnitudePruner is not fitted; call fit(model) first")
        return self.report_
