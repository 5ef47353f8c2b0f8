"""Adapting a deployed network to new data under an update scheme: prepare, check, train, restore.

The network given is never modified; the result is a stock network of the same architecture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from devicefit.core import DataError, to_dict
from devicefit.data import ArrayDataset
from devicefit.hardware import TrainMemoryReport, train_memory

from ._config import TrainConfig
from ._loop import Log, fit
from ._ondevice_schemes import SchemeConfig, prepare, restore
from ._result import TrainResult

__all__ = ["AdaptResult", "adapt", "check_adaptation_data", "modelled_memory"]


@dataclass(frozen=True)
class AdaptResult:
    """What one adaptation did: the scheme, its modelled training memory at the run's batch size and the
    training history."""

    scheme: SchemeConfig
    memory: TrainMemoryReport
    train: TrainResult

    def to_dict(self) -> dict[str, Any]:
        return {"scheme": to_dict(self.scheme), "memory": self.memory.to_dict(), "train": self.train.to_dict()}


def check_adaptation_data(model_input_shape: tuple[int, ...], num_classes: int, ds: ArrayDataset) -> None:
    """Raise `DataError` when `ds` has another input shape, or labels the network has no output for."""
    if tuple(ds.input_shape) != tuple(model_input_shape):
        raise DataError(f"{ds.name}/{ds.split}: examples have shape {ds.input_shape}, the network expects "
                        f"{tuple(model_input_shape)}")
    if len(ds) and int(ds.y.max()) >= num_classes:
        unseen = sorted({int(v) for v in ds.y if v >= num_classes})
        raise DataError(f"{ds.name}/{ds.split}: labels {unseen} are classes the network has never seen "
                        f"(it has {num_classes} outputs); adaptation cannot add classes")


def modelled_memory(prepared: nn.Module, input_shape: tuple[int, ...], cfg: TrainConfig) -> TrainMemoryReport:
    """`train_memory` of a prepared network in train mode at `cfg`'s batch size and optimizer."""
    was = {m: m.training for m in prepared.modules()}
    prepared.train()
    try:
        return train_memory(prepared, input_shape, batch_size=cfg.batch_size, optimizer=cfg.optimizer,
                            momentum=cfg.momentum)
    finally:
        for m, mode in was.items():
            m.training = mode


def adapt(model: nn.Module, train_ds: ArrayDataset, scheme: SchemeConfig, cfg: TrainConfig, *,
          input_shape: tuple[int, ...], num_classes: int, val_ds: ArrayDataset | None = None,
          log: Log | None = None) -> tuple[nn.Module, AdaptResult]:
    """Fine-tune a copy of `model` (built for `input_shape` and `num_classes`) on `train_ds` under `scheme`
    with the loop `fit` (seeded, `cfg`); return the adapted stock network (eval mode) and an
    `AdaptResult`. `model` is left untouched.

    Raises `DataError` for data the network cannot take (shape, unseen classes).
    """
    for ds in (train_ds, val_ds):
        if ds is not None:
            check_adaptation_data(input_shape, num_classes, ds)
    prepared = prepare(model, scheme)
    memory = modelled_memory(prepared, train_ds.input_shape, cfg)
    result = fit(prepared, train_ds, cfg, val_ds=val_ds, progress=False, log=log)
    return restore(prepared).eval(), AdaptResult(scheme, memory, result)
