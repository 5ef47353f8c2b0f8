"""A positional view of a space (one value per position, each from its own choice list) for strategies
that sample or mutate inside a shrunk sub-space: cell spaces through their encoding, other spaces through
their `choices()` / `values(spec)` / `from_values(values)` methods."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from devicefit.core import ArchSpec, UnsupportedOpError

__all__ = ["Positional", "positional"]


@dataclass(frozen=True)
class Positional:
    """`choices[i]` are the values position i may take; `to_values`/`from_values` convert specs."""

    space: Any
    choices: tuple[tuple[Any, ...], ...]

    def to_values(self, spec: ArchSpec) -> tuple[Any, ...]:
        """The values of `spec` (trusted to be of the space: specs come from the space or the history)."""
        if hasattr(self.space, "encoding"):
            return tuple(spec["ops"])
        return tuple(self.space.values(spec))

    def from_values(self, values: Sequence[Any]) -> ArchSpec:
        if hasattr(self.space, "encoding"):
            return self.space.encoding.spec(values)  # type: ignore[no-any-return]
        return self.space.from_values(values)  # type: ignore[no-any-return]

    def sample(self, rng: np.random.Generator, allowed: Sequence[Sequence[Any]]) -> ArchSpec:
        return self.from_values([a[int(rng.integers(len(a)))] for a in allowed])

    def mutate(self, spec: ArchSpec, rng: np.random.Generator, allowed: Sequence[Sequence[Any]]) -> ArchSpec:
        """Change one position (among those with an alternative) to another allowed value, plus each other
        position with probability 1/n (at least one change when any position has an alternative)."""
        values = list(self.to_values(spec))
        open_pos = [i for i, a in enumerate(allowed) if len([v for v in a if v != values[i]]) > 0]
        if not open_pos:
            return spec
        n = len(values)
        flip = rng.random(n) < 1.0 / n
        flip[open_pos[int(rng.integers(len(open_pos)))]] = True
        for i in np.flatnonzero(flip):
            others = [v for v in allowed[i] if v != values[i]]
            if others:
                values[i] = others[int(rng.integers(len(others)))]
        return self.from_values(values)

    def crossover(self, a: ArchSpec, b: ArchSpec, rng: np.random.Generator) -> ArchSpec:
        va, vb = self.to_values(a), self.to_values(b)
        take_a = rng.random(len(va)) < 0.5
        return self.from_values([x if t else y for x, y, t in zip(va, vb, take_a, strict=True)])


def positional(space: Any) -> Positional:
    """The positional view of `space`; UnsupportedOpError when the space offers none."""
    enc = getattr(space, "encoding", None)
    if enc is not None:
        return Positional(space, tuple(tuple(enc.ops) for _ in range(enc.n_positions)))
    if all(hasattr(space, m) for m in ("choices", "values", "from_values")):
        return Positional(space, tuple(tuple(c) for c in space.choices()))
    raise UnsupportedOpError(f"space {getattr(space, 'name', space)!r} has no positional view (needs an "
                             "`encoding` or choices()/values()/from_values()); use method random or evolution")
