"""Evaluation: accuracy, mean cross-entropy and confusion matrix of a classifier on a dataset."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from devicefit.core import DataError, check_positive
from devicefit.data import ArrayDataset, BatchLoader

__all__ = ["evaluate", "predict_logits"]


def evaluate(model: nn.Module, ds: ArrayDataset, *, batch_size: int = 256,
             confusion: bool = False) -> dict[str, Any]:
    """Score `model` on `ds` in eval mode without augmentation or gradients.

    Returns {"accuracy": float in [0, 1], "loss": mean cross-entropy (no smoothing),
    "n": examples}; with `confusion`, also "confusion": K×K counts as a list of lists,
    rows = true class, columns = predicted. The model's train/eval mode is restored.
    """
    check_positive("batch_size", batch_size)
    _check_nonempty(ds)
    k = ds.num_classes
    counts = torch.zeros(k, k, dtype=torch.int64)
    loss_sum = 0.0
    for logits, y in _batches(model, ds, batch_size):
        _check_logits(logits, k)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").item()
        pred = logits.argmax(dim=1)
        counts += torch.bincount(y * k + pred, minlength=k * k).view(k, k)
    n = len(ds)
    out: dict[str, Any] = {"accuracy": counts.diag().sum().item() / n, "loss": loss_sum / n, "n": n}
    if confusion:
        out["confusion"] = counts.tolist()
    return out


def predict_logits(model: nn.Module, ds: ArrayDataset, *, batch_size: int = 256) -> torch.Tensor:
    """Logits (N, K) of `model` on every example of `ds`, in order, on the CPU, float32."""
    check_positive("batch_size", batch_size)
    _check_nonempty(ds)
    return torch.cat([logits.float() for logits, _ in _batches(model, ds, batch_size)])


def _batches(model: nn.Module, ds: ArrayDataset, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(logits on CPU, labels) per batch, in eval mode and without gradients."""
    device = _device_of(model)
    with _eval_mode(model), torch.no_grad():
        for x, y in BatchLoader(ds, batch_size):
            yield model(x.to(device)).cpu(), y


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _check_nonempty(ds: ArrayDataset) -> None:
    if len(ds) == 0:
        raise DataError(f"{ds.name}/{ds.split}: dataset is empty")


def _check_logits(logits: torch.Tensor, num_classes: int) -> None:
    if logits.ndim != 2 or logits.shape[1] != num_classes:
        raise DataError(f"model output must be (batch, {num_classes}) logits, got shape {tuple(logits.shape)}")
