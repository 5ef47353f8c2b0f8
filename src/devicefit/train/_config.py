"""`TrainConfig`: the typed, validated settings of one training run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from devicefit.core import ConfigError, check_choice, check_positive, check_range, to_dict
from devicefit.data import AUGMENTATIONS

__all__ = ["OPTIMIZERS", "SCHEDULES", "TrainConfig"]

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "constant")

# Fields that change how a run is executed or reported, not what it learns;
# a resumed run may change them without invalidating its checkpoint.
_OPERATIONAL_FIELDS = ("threads", "checkpoint_every_epochs", "eval_batch_size")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run; defaults suit small CNNs on CIFAR-10.

    epochs, batch_size: passes over the training set and examples per step.
    optimizer: "sgd" (with `momentum`, Nesterov when `nesterov` and momentum > 0) or
        "adamw" (`momentum` ignored). `weight_decay` applies to weights with two or more
        dimensions only, never to BatchNorm parameters or biases.
    lr, schedule, warmup_epochs: peak learning rate; "cosine" decays it to 0 over the run,
        "constant" holds it; both start with a linear warm-up over `warmup_epochs`
        (fractions allowed), stepped every batch.
    label_smoothing: for the cross-entropy on hard labels.
    augment: "auto" (the dataset's default, passed to `fit` as `augment_default`) or a
        name from `devicefit.data.AUGMENTATIONS`.
    seed: seeds torch, numpy, Python `random` and the loader's shuffling and augmentation.
    threads: `torch.set_num_threads` during the run. deterministic: ask torch for
        deterministic kernels during the run (warns where an op has none). A run is
        repeatable bit for bit with the same seed *and* thread count: another thread count
        splits the CPU kernels' sums differently, and the weights part ways within an epoch.
        `threads` is left out of the fingerprint so that a run may resume with another.
    eval_batch_size: batch size for validation.
    distill_alpha, distill_temperature: weight of the soft-target term and its temperature,
        used only when `fit` gets a teacher.
    checkpoint_every_epochs: checkpoint period when `fit` has a run directory (the last
        epoch is always checkpointed).
    """

    epochs: int = 30
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    augment: str = "auto"
    seed: int = 0
    threads: int = 2
    deterministic: bool = True
    eval_batch_size: int = 256
    distill_alpha: float = 0.5
    distill_temperature: float = 4.0
    checkpoint_every_epochs: int = 1

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "threads", "eval_batch_size", "checkpoint_every_epochs"):
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("seed", self.seed, minimum=0)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("augment", self.augment, ("auto", *AUGMENTATIONS))
        check_positive("lr", self.lr)
        _check_half_open("momentum", self.momentum)
        check_positive("weight_decay", self.weight_decay, allow_zero=True)
        check_range("warmup_epochs", self.warmup_epochs, 0.0, float(self.epochs), inclusive=True)
        _check_half_open("label_smoothing", self.label_smoothing)
        check_range("distill_alpha", self.distill_alpha, 0.0, 1.0, inclusive=True)
        check_positive("distill_temperature", self.distill_temperature)
        for name in ("nesterov", "deterministic"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be a bool, got {getattr(self, name)!r}")

    def fingerprint(self) -> dict[str, Any]:
        """The JSON-ready settings that decide what a run learns (operational fields left out)."""
        d = to_dict(self)
        for name in _OPERATIONAL_FIELDS:
            d.pop(name)
        return d


def _check_int(name: str, value: Any, *, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_half_open(name: str, value: Any) -> None:
    """`value` in [0, 1)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not 0.0 <= value < 1.0:
        raise ConfigError(f"{name} must be in [0, 1), got {value!r}")
