"""`random`: uniform random search (the baseline every method is judged against)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from devicefit.core import ArchSpec

from ._problem import Evaluated
from ._strategy import SearchContext, Strategy, register_strategy

__all__ = ["RandomSearch"]


@register_strategy
class RandomSearch(Strategy):
    """Each proposal is `space.sample(rng)`; the driver's screen turns it into rejection sampling of the
    feasible region when a constraint estimate is given."""

    name: ClassVar[str] = "random"

    def propose(self, history: Sequence[Evaluated], rng: np.random.Generator, ctx: SearchContext,
                attempt: int = 0) -> ArchSpec:
        return self.space.sample(rng)  # type: ignore[no-any-return]
