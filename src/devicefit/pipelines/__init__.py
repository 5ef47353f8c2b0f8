"""Recipes that wire stages together: the train job now, the end-to-end `devicefit run` later."""

from ._run_dir import claim_run_dir, open_run_log
from ._train_job import DataConfig, ModelConfig, TrainJobConfig, default_run_dir, run_train_job

__all__ = [
    "DataConfig",
    "ModelConfig",
    "TrainJobConfig",
    "claim_run_dir",
    "default_run_dir",
    "open_run_log",
    "run_train_job",
]
