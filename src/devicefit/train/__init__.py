"""train stage: a seeded, deterministic, checkpointed and resumable training loop, and evaluation."""

from ._bn import recalibrate_bn_
from ._checkpoint import load_checkpoint, load_weights, save_weights
from ._config import OPTIMIZERS, SCHEDULES, TrainConfig
from ._distributed import PATH_SAMPLINGS, PathSampling, TorchDistributed, fit_supernet, state_digest
from ._evaluate import evaluate, predict_logits
from ._loop import CHECKPOINT_NAME, MODEL_NAME, DataParallel, fit
from ._ondevice_adapt import AdaptResult, adapt, check_adaptation_data, modelled_memory
from ._ondevice_measure import RSS_METHOD, measure_step_rss, saved_activation_bytes, step_allocator_peak_bytes
from ._ondevice_ops import FoldedBN, FrozenConv2d, FrozenStatsBN, MaskReLU, SparseConv2d, pack_bits, unpack_bits
from ._ondevice_schemes import (
    SCHEMES,
    SchemeConfig,
    UpdatePlan,
    WeightLayer,
    plan_updates,
    prepare,
    register_scheme,
    restore,
    weight_layers,
)
from ._ondevice_select import BudgetedSelector, Candidate
from ._ondevice_tinytl import LeanAvgPool2d, LiteResidual, ResizeTo, add_lite_residuals_
from ._optim import build_optimizer, build_scheduler, lr_factor
from ._result import EpochStats, TrainResult

__all__ = [
    "CHECKPOINT_NAME",
    "MODEL_NAME",
    "OPTIMIZERS",
    "PATH_SAMPLINGS",
    "RSS_METHOD",
    "SCHEDULES",
    "SCHEMES",
    "AdaptResult",
    "BudgetedSelector",
    "Candidate",
    "DataParallel",
    "EpochStats",
    "FoldedBN",
    "FrozenConv2d",
    "FrozenStatsBN",
    "LeanAvgPool2d",
    "LiteResidual",
    "MaskReLU",
    "PathSampling",
    "ResizeTo",
    "SchemeConfig",
    "SparseConv2d",
    "TorchDistributed",
    "TrainConfig",
    "TrainResult",
    "UpdatePlan",
    "WeightLayer",
    "adapt",
    "add_lite_residuals_",
    "build_optimizer",
    "build_scheduler",
    "check_adaptation_data",
    "evaluate",
    "fit",
    "fit_supernet",
    "load_checkpoint",
    "load_weights",
    "lr_factor",
    "measure_step_rss",
    "modelled_memory",
    "pack_bits",
    "plan_updates",
    "predict_logits",
    "prepare",
    "recalibrate_bn_",
    "register_scheme",
    "restore",
    "save_weights",
    "saved_activation_bytes",
    "state_digest",
    "step_allocator_peak_bytes",
    "unpack_bits",
    "weight_layers",
]
