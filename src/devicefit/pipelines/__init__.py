"""Recipes that wire stages together: the train and profile jobs, and the end-to-end `devicefit run`."""

from ._adapt_job import ADAPT_SCHEMES, ADAPT_STAGE, AdaptJobConfig, default_adapt_dir, run_adapt_job, split_new_data
from ._compress_job import COMPRESS_METHODS, COMPRESS_STAGE, CompressJobConfig, run_compress_job
from ._deploy_job import DeployJobConfig, load_trained_run, render_deploy_markdown, run_deploy_job
from ._llm_job import LLMJobConfig, parse_format_spec, run_llm_eval, run_llm_generate, run_llm_quantize
from ._profile_job import PROFILE_STAGE, ProfileJobConfig, latency_samples, make_predictor, run_profile_job
from ._recipe import CandidateConfig, CompressConfig, DeployConfig, Recipe, ZooConfig, load_recipe
from ._run_dir import claim_run_dir, open_run_log
from ._run_job import STAGES, run_recipe
from ._search_job import SearchJobConfig, TabularProblem, device_column, run_search_job, tabular_problem
from ._stages import Stage, StageContext, stage
from ._train_job import JOB_STAGE, DataConfig, ModelConfig, TrainJobConfig, default_run_dir, run_train_job

__all__ = [
    "ADAPT_SCHEMES",
    "ADAPT_STAGE",
    "COMPRESS_METHODS",
    "COMPRESS_STAGE",
    "JOB_STAGE",
    "PROFILE_STAGE",
    "STAGES",
    "AdaptJobConfig",
    "CandidateConfig",
    "CompressConfig",
    "CompressJobConfig",
    "DataConfig",
    "DeployConfig",
    "DeployJobConfig",
    "LLMJobConfig",
    "ModelConfig",
    "ProfileJobConfig",
    "Recipe",
    "SearchJobConfig",
    "Stage",
    "StageContext",
    "TabularProblem",
    "TrainJobConfig",
    "ZooConfig",
    "claim_run_dir",
    "default_adapt_dir",
    "default_run_dir",
    "device_column",
    "latency_samples",
    "load_recipe",
    "load_trained_run",
    "make_predictor",
    "open_run_log",
    "parse_format_spec",
    "render_deploy_markdown",
    "run_adapt_job",
    "run_compress_job",
    "run_deploy_job",
    "run_llm_eval",
    "run_llm_generate",
    "run_llm_quantize",
    "run_profile_job",
    "run_recipe",
    "run_search_job",
    "run_train_job",
    "split_new_data",
    "stage",
    "tabular_problem",
]
