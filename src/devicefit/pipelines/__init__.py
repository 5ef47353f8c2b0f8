"""Recipes that wire stages together: the train and profile jobs now, the end-to-end `devicefit run` later."""

from ._profile_job import PROFILE_STAGE, ProfileJobConfig, latency_samples, make_predictor, run_profile_job
from ._run_dir import claim_run_dir, open_run_log
from ._train_job import JOB_STAGE, DataConfig, ModelConfig, TrainJobConfig, default_run_dir, run_train_job

__all__ = [
    "JOB_STAGE",
    "PROFILE_STAGE",
    "DataConfig",
    "ModelConfig",
    "ProfileJobConfig",
    "TrainJobConfig",
    "claim_run_dir",
    "default_run_dir",
    "latency_samples",
    "make_predictor",
    "open_run_log",
    "run_profile_job",
    "run_train_job",
]
