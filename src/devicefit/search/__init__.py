"""search stage: ask/tell architecture search over a space through optuna studies (random, regularized
evolution, HSCoNAS constrained evolution) and LightNAS differentiable search; objectives are injected."""

from ._channels import scale_channels
from ._evolution import RegularizedEvolution
from ._hsconas import ConstrainedEvolution
from ._latency_table import LatencyTable, LatencyTableConfig, sample_calibration_specs
from ._lightnas import LightNAS, LightNASConfig, LinearCost, MaxCost
from ._pareto import pareto_front
from ._positional import Positional, positional
from ._problem import Constraint, Evaluated, check_budgets_feasible, is_feasible
from ._random import RandomSearch
from ._reference import ReferenceLatency, parse_reference
from ._search import SearchConfig, SearchResult, history_of, run_search
from ._storage import open_study, storage_url
from ._strategy import STRATEGIES, SearchContext, Strategy, get_strategy, list_strategies, register_strategy

__all__ = [
    "STRATEGIES",
    "ConstrainedEvolution",
    "Constraint",
    "Evaluated",
    "LatencyTable",
    "LatencyTableConfig",
    "LightNAS",
    "LightNASConfig",
    "LinearCost",
    "MaxCost",
    "Positional",
    "RandomSearch",
    "ReferenceLatency",
    "RegularizedEvolution",
    "SearchConfig",
    "SearchContext",
    "SearchResult",
    "Strategy",
    "check_budgets_feasible",
    "get_strategy",
    "history_of",
    "is_feasible",
    "list_strategies",
    "open_study",
    "pareto_front",
    "parse_reference",
    "positional",
    "register_strategy",
    "run_search",
    "sample_calibration_specs",
    "scale_channels",
    "storage_url",
]
