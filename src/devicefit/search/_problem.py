"""What a search is asked to solve: the objective's metric, the constraints, and the evaluated-trial record.

Search knows nothing about training or hardware: the caller injects `objective(spec) -> metrics` (expensive,
counted against the budget) and optionally `estimate(spec) -> constraint values` (cheap, used to screen
candidates before they are evaluated).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from devicefit.core import ArchSpec, BudgetError, ConfigError, check_positive

__all__ = ["Constraint", "Estimate", "Evaluated", "Objective", "check_budgets_feasible", "is_feasible"]

Objective = Callable[[ArchSpec], Mapping[str, float]]
Estimate = Callable[[ArchSpec], Mapping[str, float]]


@dataclass(frozen=True)
class Constraint:
    """`name` (a metric the objective returns, e.g. "latency_ms") must be <= `limit`.

    `lower_bound` is the smallest value any architecture of the space can reach (when the caller knows
    it); a limit below it is infeasible and the search refuses to start (`BudgetError`).
    """

    name: str
    limit: float
    lower_bound: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"constraint name must be a non-empty metric name, got {self.name!r}")
        check_positive(f"constraint {self.name!r} limit", self.limit)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "limit": self.limit, "lower_bound": self.lower_bound}


@dataclass(frozen=True)
class Evaluated:
    """One finished evaluation: trial `number` (study order), its `spec`, the objective's `metrics`
    (including each constraint's value) and whether every constraint held on those measured values."""

    number: int
    spec: ArchSpec
    metrics: Mapping[str, float] = field(default_factory=dict)
    feasible: bool = True

    def value(self, metric: str) -> float:
        """The metric, or -inf for an infeasible trial (so it never wins a comparison by `metric`)."""
        return float(self.metrics[metric]) if self.feasible else -math.inf

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "spec": self.spec.to_dict(), "metrics": dict(self.metrics),
                "feasible": self.feasible}


def is_feasible(values: Mapping[str, float], constraints: Sequence[Constraint]) -> bool:
    """True when every constraint's value is present, finite and <= its limit."""
    for c in constraints:
        v = values.get(c.name)
        if v is None or not math.isfinite(float(v)) or float(v) > c.limit:
            return False
    return True


def check_budgets_feasible(constraints: Sequence[Constraint]) -> None:
    """BudgetError naming the constraint and the smallest achievable value when a limit is below it."""
    for c in constraints:
        if c.lower_bound is not None and c.limit < c.lower_bound:
            raise BudgetError(f"{c.name} budget {c.limit:.6g} is infeasible: the smallest architecture of the "
                              f"space reaches {c.lower_bound:.6g}; give {c.name} >= {c.lower_bound:.6g}")
