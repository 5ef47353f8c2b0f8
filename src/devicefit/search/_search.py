"""The ask/tell driver: one optuna trial per evaluated architecture, the strategy rebuilt from the stored
trials on every ask, so a killed search resumes and several workers can share one study."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from devicefit.core import ArchSpec, BudgetError, ConfigError, DataError, check_int

from ._pareto import pareto_front
from ._problem import Constraint, Estimate, Evaluated, Objective, check_budgets_feasible, is_feasible
from ._storage import open_study
from ._strategy import SearchContext, Strategy, get_strategy

__all__ = ["SearchConfig", "SearchResult", "history_of", "run_search"]

SPEC_ATTR, METRICS_ATTR, FEASIBLE_ATTR = "spec", "metrics", "feasible"


@dataclass(frozen=True)
class SearchConfig:
    """A search: `method` (registered strategy) with `options`, `n_trials` evaluations in total (counted over
    the whole study, across resumes and workers), maximising `metric` under `constraints`.

    `max_proposals` bounds the proposals per trial that the screen (estimate, duplicates) may reject before
    the search gives up with BudgetError.
    """

    method: str = "hsconas"
    n_trials: int = 100
    seed: int = 0
    metric: str = "accuracy"
    constraints: tuple[Constraint, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    max_proposals: int = 2000

    def __post_init__(self) -> None:
        check_int("n_trials", self.n_trials, 1)
        check_int("seed", self.seed)
        check_int("max_proposals", self.max_proposals, 1)
        get_strategy(self.method)  # unknown method -> ConfigError listing the known ones
        object.__setattr__(self, "constraints", tuple(self.constraints))
        object.__setattr__(self, "options", dict(self.options))

    def strategy(self, space: Any) -> Strategy:
        cls = get_strategy(self.method)
        try:
            return cls(space, **self.options)
        except TypeError as e:
            raise ConfigError(f"method {self.method!r} does not take options {sorted(self.options)}: {e}") from None

    def fingerprint(self, space: Any) -> dict[str, Any]:
        return {"space": getattr(space, "name", type(space).__name__), "method": self.method, "seed": self.seed,
                "metric": self.metric, "options": dict(self.options),
                "constraints": [{"name": c.name, "limit": c.limit} for c in self.constraints]}


@dataclass(frozen=True)
class SearchResult:
    """Every finished evaluation (trial order), the best feasible one (None when none met the constraints),
    the Pareto front of the metric against each constraint, and the strategy's own report."""

    config: SearchConfig
    history: tuple[Evaluated, ...]
    best: Evaluated | None
    pareto: dict[str, tuple[Evaluated, ...]]
    strategy: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.config.method, "n_trials": self.config.n_trials, "seed": self.config.seed,
            "metric": self.config.metric, "options": dict(self.config.options),
            "constraints": [c.to_dict() for c in self.config.constraints],
            "best": None if self.best is None else self.best.to_dict(),
            "n_evaluated": len(self.history),
            "n_feasible": sum(h.feasible for h in self.history),
            "pareto": {k: [h.number for h in v] for k, v in self.pareto.items()},
            "strategy": self.strategy,
            "evaluated": [h.to_dict() for h in self.history],
        }


def run_search(
    space: Any,
    objective: Objective,
    config: SearchConfig,
    *,
    estimate: Estimate | None = None,
    storage: str | os.PathLike[str] | None = None,
    study_name: str = "devicefit-search",
    on_trial: Callable[[Evaluated], None] | None = None,
) -> SearchResult:
    """Run (or resume) a search until the study holds `config.n_trials` finished evaluations.

    `objective(spec)` returns metrics including `config.metric` and every constraint's name; `estimate(spec)`
    (optional, cheap) returns constraint values used to reject candidates before evaluation. `storage` is a
    SQLite path, a database URL or None (in memory). Each evaluation is stored (spec, metrics, feasibility)
    as soon as it finishes; an objective that raises leaves its trial FAILED with the spec recorded.
    Raises BudgetError when a limit is below a constraint's `lower_bound`, or when `max_proposals`
    proposals in a row are all rejected.
    """
    check_budgets_feasible(config.constraints)
    strategy = config.strategy(space)
    study = open_study(storage, study_name, config.fingerprint(space))
    ctx = SearchContext(config.metric, _screen(estimate, config.constraints),
                        _utilisation(estimate, config.constraints))
    cache: dict[int, Evaluated] = {}
    history = history_of(study, cache)
    while len(history) < config.n_trials:
        done = _evaluate_one(study, space, strategy, objective, config, ctx, history)
        history = history_of(study, cache)
        if on_trial is not None:
            on_trial(done)
    return _result(config, history, strategy, ctx)


def history_of(study: Any, cache: dict[int, Evaluated] | None = None) -> list[Evaluated]:
    """Finished (COMPLETE) trials of a study written by `run_search`, in trial order. `cache` (trial number ->
    record, filled in place) spares re-parsing trials already read; finished trials never change."""
    from optuna.trial import TrialState

    out = []
    cache = {} if cache is None else cache
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.number in cache:
            out.append(cache[t.number])
            continue
        attrs = t.user_attrs
        try:
            spec = ArchSpec.from_json(attrs[SPEC_ATTR])
            metrics = {k: float(v) for k, v in attrs[METRICS_ATTR].items()}
        except (KeyError, TypeError, AttributeError):
            raise DataError(f"study trial {t.number} has no devicefit spec/metrics; the study was not written "
                            f"by devicefit.search") from None
        cache[t.number] = Evaluated(t.number, spec, metrics, bool(attrs.get(FEASIBLE_ATTR, True)))
        out.append(cache[t.number])
    return sorted(out, key=lambda h: h.number)


def _screen(estimate: Estimate | None, constraints: Sequence[Constraint]) -> Callable[[ArchSpec], bool]:
    if estimate is None or not constraints:
        return lambda spec: True
    return lambda spec: is_feasible(estimate(spec), constraints)


def _utilisation(estimate: Estimate | None, constraints: Sequence[Constraint]) -> Callable[[ArchSpec], float]:
    if estimate is None or not constraints:
        return lambda spec: 0.0

    def share(spec: ArchSpec) -> float:
        values = estimate(spec)
        return max(float(values.get(c.name, math.inf)) / c.limit for c in constraints)

    return share


def _evaluate_one(study: Any, space: Any, strategy: Strategy, objective: Objective, config: SearchConfig,
                  ctx: SearchContext, history: list[Evaluated]) -> Evaluated:
    trial = study.ask()
    rng = np.random.default_rng([config.seed, trial.number])
    try:
        spec = _propose(strategy, history, rng, ctx, config.max_proposals)
        trial.set_user_attr(SPEC_ATTR, spec.to_json())
        metrics = _check_metrics(objective(spec), config)
    except BaseException:
        from optuna.trial import TrialState

        study.tell(trial, state=TrialState.FAIL)
        raise
    feasible = is_feasible(metrics, config.constraints)
    trial.set_user_attr(METRICS_ATTR, metrics)
    trial.set_user_attr(FEASIBLE_ATTR, feasible)
    study.tell(trial, metrics[config.metric])
    return Evaluated(trial.number, spec, metrics, feasible)


def _propose(strategy: Strategy, history: Sequence[Evaluated], rng: np.random.Generator, ctx: SearchContext,
             max_proposals: int) -> ArchSpec:
    seen = {h.spec for h in history}
    for attempt in range(max_proposals):
        spec = strategy.propose(history, rng, ctx, attempt)
        if spec not in seen and ctx.feasible(spec):
            return spec
    raise BudgetError(f"{strategy.name}: {max_proposals} proposals in a row were duplicates or predicted to "
                      f"violate the constraints; the budget may be too tight for the space (raise the limit or "
                      f"max_proposals)")


def _check_metrics(metrics: Mapping[str, float], config: SearchConfig) -> dict[str, float]:
    if not isinstance(metrics, Mapping):
        raise ConfigError(f"objective must return a mapping of metric -> float, got {type(metrics).__name__}")
    out = {str(k): float(v) for k, v in metrics.items()}
    for name in (config.metric, *(c.name for c in config.constraints)):
        if name not in out or not math.isfinite(out[name]):
            raise ConfigError(f"objective must return a finite {name!r}, got {out.get(name)!r} "
                              f"(metrics: {sorted(out)})")
    return out


def _result(config: SearchConfig, history: list[Evaluated], strategy: Strategy, ctx: SearchContext
            ) -> SearchResult:
    feasible = [h for h in history if h.feasible]
    best = max(feasible, key=lambda h: (h.metrics[config.metric], -h.number)) if feasible else None
    pareto = {c.name: tuple(pareto_front(history, config.metric, (c.name,))) for c in config.constraints}
    return SearchResult(config, tuple(history), best, pareto, strategy.describe(history, ctx))
