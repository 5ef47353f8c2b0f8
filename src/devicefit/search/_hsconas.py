"""`hsconas`: constrained evolution with progressive space shrinking (HSCoNAS, Luo et al., DATE 2021, §III-C/D).

Candidates are screened by the constraint estimate before they cost an evaluation (the driver does it), so
the population only ever holds architectures predicted to meet the budget. Between stages the per-position
candidates that the elite rarely uses are dropped; `describe` reports how far the space shrank.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from devicefit.core import ArchSpec, ConfigError

from ._positional import Positional, positional
from ._problem import Evaluated
from ._strategy import SearchContext, Strategy, best_first, register_strategy

__all__ = ["ConstrainedEvolution"]


@register_strategy
class ConstrainedEvolution(Strategy):
    """HSCoNAS-style evolution over a positional view of the space.

    - The first `init` proposals are uniform over the (current) allowed values.
    - Afterwards a child is made from the `parents` best feasible evaluations: with probability
      `crossover_prob` a uniform crossover of two tournament-picked parents, else one parent; then mutated
      (one position, plus each other with probability 1/n) inside the allowed values.
    - Progressive shrinking (`shrink=True`): after `init + k · stage_trials` evaluations (k = 1, 2, ...), each
      position keeps only the values used by at least `min_share` of the `elite` best feasible evaluations
      (never emptying a position, and never leaving fewer than `min_size` architectures: such a stage is
      skipped). Stages only ever remove values.
    - Of up to `n_candidates` feasible, unseen children (screened with `ctx.feasible`), the one with the
      highest estimated budget use (`ctx.utilisation`) is proposed: accuracy grows with capacity, so a child
      that spends more of the budget is the better bet (the idea behind HSCoNAS's channel scaling).
      `spend_budget=False` turns that off (the first such child is proposed): the ablation of budget
      spending inside the search, beside `search.scale_channels` on the winner.
    - When no such child turns up, or the driver rejected a proposal (`attempt` >= 1), proposals are uniform
      draws from the allowed values, and from the full space after `4 · patience` attempts, so a converged
      population never stalls the search.
    """

    name: ClassVar[str] = "hsconas"

    def __init__(self, space: Any, *, init: int = 20, parents: int = 10, crossover_prob: float = 0.5,
                 shrink: bool = True, stage_trials: int = 20, elite: int = 10, min_share: float = 0.1,
                 min_size: int = 3000, patience: int = 50, n_candidates: int = 32, spend_budget: bool = True) -> None:
        super().__init__(space)
        for key, value in (("init", init), ("parents", parents), ("stage_trials", stage_trials), ("elite", elite),
                           ("min_size", min_size), ("patience", patience), ("n_candidates", n_candidates)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"hsconas {key} must be an int >= 1, got {value!r}")
        if not 0.0 <= crossover_prob <= 1.0 or not 0.0 <= min_share <= 1.0:
            raise ConfigError(f"hsconas crossover_prob and min_share must be in [0, 1], got "
                              f"{crossover_prob!r}, {min_share!r}")
        self.init, self.parents, self.crossover_prob = init, parents, crossover_prob
        self.shrink, self.stage_trials, self.elite, self.min_share = shrink, stage_trials, elite, min_share
        if not isinstance(spend_budget, bool):
            raise ConfigError(f"hsconas spend_budget must be true or false, got {spend_budget!r}")
        self.min_size, self.patience, self.n_candidates = min_size, patience, n_candidates
        self.spend_budget = spend_budget

    def propose(self, history: Sequence[Evaluated], rng: np.random.Generator, ctx: SearchContext,
                attempt: int = 0) -> ArchSpec:
        view = positional(self.space)
        allowed = self.allowed(history, ctx.metric, view)[-1][1]
        pool = best_first(history, ctx.metric)[: self.parents]
        if attempt >= 4 * self.patience:
            return view.sample(rng, view.choices)
        if len(history) < self.init or not pool or attempt >= 1:
            return view.sample(rng, allowed)
        seen = {h.spec for h in history}
        best: tuple[float, ArchSpec] | None = None
        for _ in range(self.n_candidates * 20):
            child = self._child(pool, rng, ctx.metric, view, allowed)
            if child in seen or not ctx.feasible(child):
                continue
            seen.add(child)
            if not self.spend_budget:
                return child
            score = ctx.utilisation(child)
            if best is None or score > best[0]:
                best = (score, child)
            if len(seen) - len(history) >= self.n_candidates:
                break
        return best[1] if best is not None else view.sample(rng, allowed)

    def _child(self, pool: Sequence[Evaluated], rng: np.random.Generator, metric: str, view: Positional,
               allowed: tuple[tuple[Any, ...], ...]) -> ArchSpec:
        child = self._tournament(pool, rng, metric).spec
        if len(pool) > 1 and rng.random() < self.crossover_prob:
            child = view.crossover(child, self._tournament(pool, rng, metric).spec, rng)
        return view.mutate(child, rng, allowed)

    def allowed(self, history: Sequence[Evaluated], metric: str, view: Positional | None = None
                ) -> list[tuple[int, tuple[tuple[Any, ...], ...]]]:
        """[(after_trials, allowed values per position)] for the full space and after each shrink stage."""
        view = view or positional(self.space)
        stages = [(0, view.choices)]
        if not self.shrink:
            return stages
        t = self.init + self.stage_trials
        while t <= len(history):
            stages.append((t, self._shrunk(history[:t], metric, view, stages[-1][1])))
            t += self.stage_trials
        return stages

    def describe(self, history: Sequence[Evaluated], ctx: SearchContext) -> dict[str, Any]:
        stages = self.allowed(history, ctx.metric)
        full = _size(stages[0][1])
        return {"shrink": [{"after_trials": t, "space_size": _size(a), "fraction_of_full": _size(a) / full}
                           for t, a in stages],
                "allowed": [list(a) for a in stages[-1][1]]}

    def _shrunk(self, history: Sequence[Evaluated], metric: str, view: Positional,
                allowed: tuple[tuple[Any, ...], ...]) -> tuple[tuple[Any, ...], ...]:
        elite = [view.to_values(h.spec) for h in best_first(history, metric)[: self.elite]]
        if not elite:
            return allowed
        out = []
        for i, values in enumerate(allowed):
            counts = {v: sum(e[i] == v for e in elite) for v in values}
            keep = tuple(v for v in values if counts[v] >= max(self.min_share * len(elite), 1e-12))
            out.append(keep or values)
        return tuple(out) if _size(out) >= self.min_size else allowed

    @staticmethod
    def _tournament(pool: Sequence[Evaluated], rng: np.random.Generator, metric: str) -> Evaluated:
        a, b = (pool[int(i)] for i in rng.integers(len(pool), size=2))
        return a if (a.value(metric), -a.number) >= (b.value(metric), -b.number) else b


def _size(allowed: Sequence[Sequence[Any]]) -> float:
    return float(math.prod(len(a) for a in allowed))
