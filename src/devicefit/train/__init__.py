"""train stage: a seeded, deterministic, checkpointed and resumable training loop, and evaluation."""

from ._checkpoint import load_checkpoint, load_weights, save_weights
from ._config import OPTIMIZERS, SCHEDULES, TrainConfig
from ._evaluate import evaluate, predict_logits
from ._loop import CHECKPOINT_NAME, MODEL_NAME, fit
from ._optim import build_optimizer, build_scheduler, lr_factor
from ._result import EpochStats, TrainResult

__all__ = [
    "CHECKPOINT_NAME",
    "MODEL_NAME",
    "OPTIMIZERS",
    "SCHEDULES",
    "EpochStats",
    "TrainConfig",
    "TrainResult",
    "build_optimizer",
    "build_scheduler",
    "evaluate",
    "fit",
    "load_checkpoint",
    "load_weights",
    "lr_factor",
    "predict_logits",
    "save_weights",
]
