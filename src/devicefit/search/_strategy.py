"""The `Strategy` contract (propose the next architecture from the evaluated history) and its registry.

A strategy is stateless between calls: everything it knows is the history it is given, so a search
resumed from a stored study (or shared by several workers) rebuilds the same state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np

from devicefit.core import ArchSpec, Registry

from ._problem import Evaluated

__all__ = ["STRATEGIES", "SearchContext", "Strategy", "get_strategy", "list_strategies", "register_strategy"]


@dataclass(frozen=True)
class SearchContext:
    """What a strategy may consult besides the history: the maximised `metric`; `feasible(spec)`, the cheap
    constraint screen (always True when the caller gave no estimate); and `utilisation(spec)`, the largest
    estimated share of a constraint's limit that `spec` uses (0.0 without an estimate)."""

    metric: str
    feasible: Callable[[ArchSpec], bool]
    utilisation: Callable[[ArchSpec], float] = lambda spec: 0.0


class Strategy(ABC):
    """Proposes architectures of `space`; constructed as `cls(space, **options)` (options only stored).

    Contract: `propose(history, rng, ctx, attempt=0)` returns one spec of the space, using only `history`
    (finished evaluations in trial order), `rng`, `ctx` and `attempt`. The driver screens the proposal
    (constraint estimate, duplicates) and calls `propose` again with the same history and `attempt` + 1;
    strategies must not assume every proposal gets evaluated, and may widen their exploration as `attempt`
    grows (so a converged population never stalls the search). `describe(history, ctx)` returns JSON-ready
    facts about the strategy's state (e.g. how much the space shrank) for the search record.
    """

    name: ClassVar[str]

    def __init__(self, space: Any) -> None:
        self.space = space

    @abstractmethod
    def propose(self, history: Sequence[Evaluated], rng: np.random.Generator, ctx: SearchContext,
                attempt: int = 0) -> ArchSpec:
        ...

    def describe(self, history: Sequence[Evaluated], ctx: SearchContext) -> dict[str, Any]:
        return {}


STRATEGIES: Registry[type[Strategy]] = Registry("search method")
T = TypeVar("T", bound=type[Strategy])


def register_strategy(cls: T) -> T:
    """Class decorator: register a `Strategy` subclass under `cls.name`."""
    STRATEGIES.add(cls.name, cls)
    return cls


def get_strategy(name: str) -> type[Strategy]:
    return STRATEGIES.get(name)


def list_strategies() -> list[str]:
    return STRATEGIES.names()


def best_first(history: Sequence[Evaluated], metric: str) -> list[Evaluated]:
    """Feasible trials, best `metric` first (ties: earlier trial first)."""
    ok = [h for h in history if h.feasible]
    return sorted(ok, key=lambda h: (-h.value(metric), h.number))
