"""HSCoNAS dynamic channel scaling: once the operators are chosen, move per-stage width multipliers to spend
the remaining budget (widen greedily while the cost stays within the limit; narrow first if it is over)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from devicefit.core import ArchSpec, BudgetError, ConfigError

__all__ = ["scale_channels"]


def scale_channels(space: Any, spec: ArchSpec, cost: Callable[[ArchSpec], float], limit: float, *,
                   score: Callable[[ArchSpec], float] | None = None,
                   max_score_drop: float | None = None) -> tuple[ArchSpec, list[dict[str, Any]]]:
    """(scaled spec, steps) with the ops of `spec` and the stage widths changed one choice at a time.

    While `cost(spec) > limit` the stage whose narrowing saves the most is narrowed (BudgetError stating the
    smallest achievable cost when every stage is already at its narrowest). Then, among the one-step
    widenings that stay within `limit`, the best by `score` (e.g. supernet validation accuracy; default: the
    one that adds the least cost) is applied, until none fits. With `score` and `max_score_drop`, widening
    also stops when the best widening would score more than `max_score_drop` below the best spec seen so
    far, and the best-scoring spec of the walk is returned (the budget is not spent on a proxy that says
    narrower is better). `space` must hold a `widths` parameter whose choices are the ordered width
    positions of `choices()` (MBConv spaces).
    """
    if max_score_drop is not None and (score is None or max_score_drop < 0):
        raise ConfigError(f"max_score_drop needs a score function and a value >= 0, got {max_score_drop!r}")
    choices = _width_choices(space)
    steps: list[dict[str, Any]] = []
    current, c = spec, cost(spec)
    while c > limit:
        options = [(cost(s), s) for s in _moves(space, current, choices, -1)]
        if not options:
            raise BudgetError(f"cost limit {limit:.6g} is infeasible for these ops: at the narrowest widths the "
                              f"cost is {c:.6g}; give a limit >= {c:.6g} or other ops")
        c, current = min(options, key=lambda t: t[0])
        steps.append({"move": "narrow", "widths": list(current["widths"]), "cost": c})
    best = (score(current), current, len(steps)) if max_score_drop is not None and score else None
    while True:
        fits = [(cost(s), s) for s in _moves(space, current, choices, +1)]
        fits = [(v, s) for v, s in fits if v <= limit]
        if not fits:
            break
        c, current = max(fits, key=lambda t: score(t[1])) if score else min(fits, key=lambda t: t[0])
        if best is not None and score is not None:
            value = score(current)
            if value < best[0] - float(max_score_drop or 0.0):
                break
            if value > best[0]:
                best = (value, current, len(steps) + 1)
        steps.append({"move": "widen", "widths": list(current["widths"]), "cost": c})
    if best is None:
        return current, steps
    return best[1], steps[: best[2]]


def _width_choices(space: Any) -> tuple[float, ...]:
    stages = getattr(space, "stages", None)
    if stages is None or not hasattr(space, "choices"):
        raise ConfigError(f"space {getattr(space, 'name', space)!r} has no per-stage widths to scale")
    return tuple(sorted(space.choices()[-1]))


def _moves(space: Any, spec: ArchSpec, choices: tuple[float, ...], direction: int) -> list[ArchSpec]:
    widths = list(spec["widths"])
    out = []
    for i, w in enumerate(widths):
        j = choices.index(w) + direction
        if 0 <= j < len(choices):
            out.append(space.validate(spec.replace(widths=(*widths[:i], choices[j], *widths[i + 1:]))))
    return out
