"""Pareto fronts of evaluated architectures: maximise one metric, minimise costs."""

from __future__ import annotations

import math
from collections.abc import Sequence

from ._problem import Evaluated

__all__ = ["pareto_front"]


def pareto_front(history: Sequence[Evaluated], maximize: str, minimize: Sequence[str]) -> list[Evaluated]:
    """Evaluations not dominated by another (>= on `maximize`, <= on every `minimize`, strictly better on
    one), sorted by the first cost. Evaluations lacking a finite value for any of the metrics are skipped;
    of several with identical values the earliest is kept."""
    names = (maximize, *minimize)
    pts = [h for h in history if all(math.isfinite(float(h.metrics.get(n, math.nan))) for n in names)]
    key = [(-float(h.metrics[maximize]), *(float(h.metrics[n]) for n in minimize)) for h in pts]
    front: list[Evaluated] = []
    seen: set[tuple[float, ...]] = set()
    for i, h in enumerate(pts):
        if key[i] in seen:
            continue
        dominated = any(all(a <= b for a, b in zip(key[j], key[i], strict=True)) and key[j] != key[i]
                        for j in range(len(pts)))
        if not dominated:
            front.append(h)
            seen.add(key[i])
    return sorted(front, key=lambda h: (*(float(h.metrics[n]) for n in minimize), h.number))
