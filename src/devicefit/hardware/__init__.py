"""Device targets, profilers, cost and latency models, and the measured NAS tables."""

from ._encoding import ENCODINGS, FBNET, NB201, CellEncoding, get_encoding
from ._layers import BlockLatency, LayerLatency, LayerProfile, aggregate_by_block, layer_latencies
from ._memory import MemoryReport, analytic_peak_activation_bytes, measure_memory, runtime_peak_rss_bytes
from ._metrics import evaluate_predictions
from ._predictors import (
    PREDICTORS,
    GBDTPredictor,
    LatencyPredictor,
    LUTPredictor,
    MLPPredictor,
    TransferPredictor,
    list_predictors,
    load_predictor,
    register_predictor,
)
from ._profile import LatencyResult, measure_latency, usable_threads
from ._stats import SampleStats, summarize_samples
from ._tables import AccuracyTable, LatencyTable, load_accuracy_table, load_latency_table
from ._target import (
    BUDGET_NAMES,
    TARGETS,
    TARGETS_ENV,
    BudgetLine,
    BudgetReport,
    Target,
    check_budgets,
    get_target,
    list_targets,
    load_targets_dir,
    load_targets_file,
    parse_size_bytes,
)
from ._train_mem_rules import SAVED_RULES, OpInfo, SavedRef, SavedRule, register_saved_rule
from ._train_memory import OPTIMIZER_SLOTS, LayerTrainMemory, TrainMemoryReport, optimizer_slots, train_memory

__all__ = [
    "BUDGET_NAMES",
    "ENCODINGS",
    "FBNET",
    "NB201",
    "OPTIMIZER_SLOTS",
    "PREDICTORS",
    "SAVED_RULES",
    "TARGETS",
    "TARGETS_ENV",
    "AccuracyTable",
    "BlockLatency",
    "BudgetLine",
    "BudgetReport",
    "CellEncoding",
    "GBDTPredictor",
    "LUTPredictor",
    "LatencyPredictor",
    "LatencyResult",
    "LatencyTable",
    "LayerLatency",
    "LayerProfile",
    "LayerTrainMemory",
    "MLPPredictor",
    "MemoryReport",
    "OpInfo",
    "SampleStats",
    "SavedRef",
    "SavedRule",
    "Target",
    "TrainMemoryReport",
    "TransferPredictor",
    "aggregate_by_block",
    "analytic_peak_activation_bytes",
    "check_budgets",
    "evaluate_predictions",
    "get_encoding",
    "get_target",
    "layer_latencies",
    "list_predictors",
    "list_targets",
    "load_accuracy_table",
    "load_latency_table",
    "load_predictor",
    "load_targets_dir",
    "load_targets_file",
    "measure_latency",
    "measure_memory",
    "optimizer_slots",
    "parse_size_bytes",
    "register_predictor",
    "register_saved_rule",
    "runtime_peak_rss_bytes",
    "summarize_samples",
    "train_memory",
    "usable_threads",
]
