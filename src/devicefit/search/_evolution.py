"""`evolution`: regularized (aging) evolution, Real et al. (AAAI 2019), Algorithm 1."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from devicefit.core import ArchSpec, ConfigError

from ._problem import Evaluated
from ._strategy import SearchContext, Strategy, register_strategy

__all__ = ["RegularizedEvolution"]


@register_strategy
class RegularizedEvolution(Strategy):
    """The first `population` proposals are random; afterwards the population is the `population` most
    recent evaluations (the oldest dies), `sample_size` of them are drawn at random and the best by the
    metric (infeasible ones rank last) is mutated with `space.mutate`."""

    name: ClassVar[str] = "evolution"

    def __init__(self, space: Any, *, population: int = 20, sample_size: int = 5) -> None:
        super().__init__(space)
        if not 1 <= sample_size <= population:
            raise ConfigError(f"evolution sample_size must be in 1..population ({population}), got {sample_size}")
        self.population = population
        self.sample_size = sample_size

    def propose(self, history: Sequence[Evaluated], rng: np.random.Generator, ctx: SearchContext,
                attempt: int = 0) -> ArchSpec:
        if len(history) < self.population:
            return self.space.sample(rng)  # type: ignore[no-any-return]
        alive = list(history[-self.population:])
        picks = rng.choice(len(alive), size=self.sample_size, replace=False)
        parent = max((alive[int(i)] for i in picks), key=lambda h: (h.value(ctx.metric), -h.number))
        return self.space.mutate(parent.spec, rng)  # type: ignore[no-any-return]
