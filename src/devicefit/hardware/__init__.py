"""Device targets, profilers, cost and latency models, and the measured NAS tables."""

from ._encoding import ENCODINGS, FBNET, NB201, CellEncoding, get_encoding
from ._layers import BlockLatency, LayerLatency, LayerProfile, aggregate_by_block, layer_latencies
from ._memory import MemoryReport, analytic_peak_activation_bytes, measure_memory, runtime_peak_rss_bytes
from ._profile import LatencyResult, measure_latency, usable_threads
from ._stats import SampleStats, summarize_samples
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

__all__ = [
    "BUDGET_NAMES",
    "ENCODINGS",
    "FBNET",
    "NB201",
    "TARGETS",
    "TARGETS_ENV",
    "BlockLatency",
    "BudgetLine",
    "BudgetReport",
    "CellEncoding",
    "LatencyResult",
    "LayerLatency",
    "LayerProfile",
    "MemoryReport",
    "SampleStats",
    "Target",
    "aggregate_by_block",
    "analytic_peak_activation_bytes",
    "check_budgets",
    "get_encoding",
    "get_target",
    "layer_latencies",
    "list_targets",
    "load_targets_dir",
    "load_targets_file",
    "measure_latency",
    "measure_memory",
    "parse_size_bytes",
    "runtime_peak_rss_bytes",
    "summarize_samples",
    "usable_threads",
]
