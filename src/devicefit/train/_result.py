"""What a training run returns: per-epoch `EpochStats` and the run's `TrainResult` (JSON-ready)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from devicefit.core import DataError

__all__ = ["EpochStats", "TrainResult"]


@dataclass(frozen=True)
class EpochStats:
    """One epoch. `epoch` counts from 1. `train_loss`/`train_acc` are running means over the
    epoch's (augmented) batches in train mode; `val_*` are None without a validation set.
    `lr` is the learning rate of the epoch's last step. `seconds` is the whole epoch's wall
    time (training and validation); `images_per_s` is the training throughput alone."""

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float | None
    val_acc: float | None
    lr: float
    seconds: float
    images_per_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EpochStats:
        names = {f.name for f in fields(cls)}
        if not isinstance(d, dict) or set(d) != names:
            raise DataError(f"epoch record must have keys {sorted(names)}, got {d!r}")
        return cls(**d)


@dataclass(frozen=True)
class TrainResult:
    """A finished run: its history (every epoch, including those before a resume),
    `train_seconds` (sum of epoch wall times) and `resumed_from_epoch` (0 for a fresh run;
    equal to the epoch count when `fit` found the run already complete)."""

    history: tuple[EpochStats, ...]
    train_seconds: float
    resumed_from_epoch: int = 0

    @property
    def final(self) -> dict[str, Any]:
        """Metrics of the last epoch: epochs, train_loss, train_acc, val_loss, val_acc."""
        if not self.history:
            return {"epochs": 0, "train_loss": None, "train_acc": None, "val_loss": None, "val_acc": None}
        last = self.history[-1]
        return {"epochs": last.epoch, "train_loss": last.train_loss, "train_acc": last.train_acc,
                "val_loss": last.val_loss, "val_acc": last.val_acc}

    def to_dict(self) -> dict[str, Any]:
        return {"history": [h.to_dict() for h in self.history], "final": self.final,
                "train_seconds": self.train_seconds, "resumed_from_epoch": self.resumed_from_epoch}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainResult:
        """Inverse of `to_dict` (`final` is derived, so it is ignored)."""
        history = tuple(EpochStats.from_dict(h) for h in d["history"])
        return cls(history, float(d["train_seconds"]), int(d.get("resumed_from_epoch", 0)))
