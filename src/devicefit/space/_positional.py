"""`PositionalSpace`: a space whose specs are a fixed tuple of positions, each taking one of a few values;
sampling, mutation, crossover and the one-hot encoding follow from `choices()`, `values()`, `from_values()`."""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from devicefit.core import ArchSpec, ConfigError, check_range

from ._base import Space, _check_rng

__all__ = ["PositionalSpace"]


class PositionalSpace(Space):
    """Subclasses define `choices()` (the allowed values per position), `values(spec)` and
    `from_values(values)` (validating); uniform sampling, per-position mutation, uniform crossover and
    the position-major one-hot `encode` come from here."""

    @abstractmethod
    def choices(self) -> tuple[tuple[Any, ...], ...]: ...

    @abstractmethod
    def values(self, spec: ArchSpec) -> tuple[Any, ...]: ...

    @abstractmethod
    def from_values(self, values: Sequence[Any]) -> ArchSpec: ...

    @property
    def size(self) -> int:
        return math.prod(len(c) for c in self.choices())

    def _check_params(self, spec: ArchSpec, keys: tuple[str, ...]) -> None:
        """ConfigError unless `spec` is an ArchSpec of this family with no parameter outside `keys`."""
        if not isinstance(spec, ArchSpec) or spec.family != self.name:
            got = spec.family if isinstance(spec, ArchSpec) else type(spec).__name__
            raise ConfigError(f"expected an ArchSpec of family {self.name!r}, got {got!r}")
        extra = sorted(k for k, _ in spec.params if k not in keys)
        if extra:
            raise ConfigError(f"{self.name} spec has unexpected parameter(s) {extra}; expected {', '.join(keys)}")

    def sample(self, rng: np.random.Generator) -> ArchSpec:
        rng = _check_rng(rng)
        return self.from_values([c[int(rng.integers(len(c)))] for c in self.choices()])

    def mutate(self, spec: ArchSpec, rng: np.random.Generator, *, prob: float | None = None) -> ArchSpec:
        values, choices = list(self.values(spec)), self.choices()
        n = len(values)
        prob = 1.0 / n if prob is None else prob
        check_range("prob", prob, 0.0, 1.0, inclusive=True)
        flip = _check_rng(rng).random(n) < prob
        if not flip.any():
            flip[rng.integers(n)] = True
        for i in np.flatnonzero(flip):
            others = [v for v in choices[i] if v != values[i]]
            values[i] = others[int(rng.integers(len(others)))]
        return self.from_values(values)

    def crossover(self, a: ArchSpec, b: ArchSpec, rng: np.random.Generator) -> ArchSpec:
        va, vb = self.values(a), self.values(b)
        take_a = _check_rng(rng).random(len(va)) < 0.5
        return self.from_values([x if t else y for x, y, t in zip(va, vb, take_a, strict=True)])

    def encode(self, specs: Sequence[ArchSpec] | ArchSpec) -> np.ndarray:
        """(N, Σ_positions n_choices) float32 one-hot, position-major, in `choices()` order."""
        batch = [specs] if isinstance(specs, ArchSpec) else list(specs)
        choices = self.choices()
        out = np.zeros((len(batch), sum(len(c) for c in choices)), dtype=np.float32)
        offsets = np.cumsum([0] + [len(c) for c in choices[:-1]])
        for row, spec in enumerate(batch):
            for pos, value in enumerate(self.values(spec)):
                out[row, offsets[pos] + choices[pos].index(value)] = 1.0
        return out
