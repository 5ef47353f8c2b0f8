"""The `Space` contract, the fixed-length `CellSpace` built on a `CellEncoding`, and the `SPACES` registry."""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np
from torch import nn

from devicefit.core import ArchSpec, ConfigError, DevicefitError, Registry, UnsupportedOpError, check_range
from devicefit.hardware import CellEncoding

__all__ = ["SPACES", "CellSpace", "Space", "get_space", "list_spaces", "register_space"]

MAX_ENUMERATE = 1_000_000  # spaces larger than this refuse `enumerate()`


class Space(ABC):
    """A discrete search space of architectures, each an `ArchSpec` of family `name`.

    Contract (every registered space; the conformance suite checks it):

    - Stateless: all randomness comes from the `rng` argument (a `numpy.random.Generator`), so the
      same seed gives the same specs. Specs are canonical: equal architectures are equal specs.
    - `sample(rng)` draws one architecture uniformly at random.
    - `mutate(spec, rng, prob=None)` returns a valid spec differing from `spec` in at least one position;
      each position changes with probability `prob` (default 1 / n_positions).
    - `crossover(a, b, rng)` takes each position from `a` or `b` with probability 1/2 (uniform crossover).
    - `encode(specs)` -> (N, n_features) float32 features (one-hot for cell spaces).
    - `validate(spec)` returns the spec or raises `ConfigError` naming the family, position and op;
      `contains(spec)` is the boolean form and never raises.
    - `size` is the number of architectures; `enumerate()` yields each once (spaces up to
      `MAX_ENUMERATE`, else `UnsupportedOpError`).
    - `build(spec, **kwargs) -> nn.Module` builds a fresh, untrained network (B, C, H, W) -> (B, classes).
    """

    name: ClassVar[str]

    @property
    @abstractmethod
    def size(self) -> int: ...

    @abstractmethod
    def sample(self, rng: np.random.Generator) -> ArchSpec: ...

    @abstractmethod
    def mutate(self, spec: ArchSpec, rng: np.random.Generator, *, prob: float | None = None) -> ArchSpec: ...

    @abstractmethod
    def crossover(self, a: ArchSpec, b: ArchSpec, rng: np.random.Generator) -> ArchSpec: ...

    @abstractmethod
    def encode(self, specs: Sequence[ArchSpec] | ArchSpec) -> np.ndarray: ...

    @abstractmethod
    def validate(self, spec: ArchSpec) -> ArchSpec: ...

    @abstractmethod
    def enumerate(self) -> Iterator[ArchSpec]: ...

    @abstractmethod
    def build(self, spec: ArchSpec, **kwargs: Any) -> nn.Module: ...

    def contains(self, spec: object) -> bool:
        """True when `spec` is an `ArchSpec` of this space (never raises)."""
        if not isinstance(spec, ArchSpec):
            return False
        try:
            self.validate(spec)
        except DevicefitError:
            return False
        return True

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, size={self.size})"


def _check_rng(rng: Any) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise ConfigError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
                          f"got {type(rng).__name__}")
    return rng


class CellSpace(Space):
    """A space of `encoding.n_positions` independent choices among `encoding.ops` (NB201 edges, FBNet layers).

    Specs are exactly `encoding.spec(ops)` = `ArchSpec(family, {"ops": (...)})`, as in the measured tables.
    """

    encoding: ClassVar[CellEncoding]

    @property
    def size(self) -> int:
        return len(self.encoding.ops) ** self.encoding.n_positions

    def ops_of(self, spec: ArchSpec) -> tuple[str, ...]:
        """The op names of `spec`, position order; raises like `validate`."""
        return self.validate(spec)["ops"]  # type: ignore[no-any-return]

    def validate(self, spec: ArchSpec) -> ArchSpec:
        if not isinstance(spec, ArchSpec):
            raise ConfigError(f"spec must be an ArchSpec of family {self.name!r}, got {type(spec).__name__}")
        extra = sorted(k for k, _ in spec.params if k != "ops")
        if spec.family == self.name and extra:
            raise ConfigError(f"{self.name} spec has unexpected parameter(s) {extra}; expected only 'ops'")
        return self.encoding.spec(self.encoding.ops_of(spec))

    def sample(self, rng: np.random.Generator) -> ArchSpec:
        idx = _check_rng(rng).integers(0, len(self.encoding.ops), size=self.encoding.n_positions)
        return self._from_indices(idx)

    def mutate(self, spec: ArchSpec, rng: np.random.Generator, *, prob: float | None = None) -> ArchSpec:
        n, k = self.encoding.n_positions, len(self.encoding.ops)
        prob = 1.0 / n if prob is None else prob
        check_range("prob", prob, 0.0, 1.0, inclusive=True)
        idx = self.encoding.indices([self.validate(spec)])[0]
        flip = _check_rng(rng).random(n) < prob
        if not flip.any():
            flip[rng.integers(n)] = True
        # a shift in 1..k-1 (mod k) picks a different op uniformly
        shift = rng.integers(1, k, size=n)
        return self._from_indices(np.where(flip, (idx + shift) % k, idx))

    def crossover(self, a: ArchSpec, b: ArchSpec, rng: np.random.Generator) -> ArchSpec:
        ia, ib = self.encoding.indices([self.validate(a), self.validate(b)])
        take_a = _check_rng(rng).random(self.encoding.n_positions) < 0.5
        return self._from_indices(np.where(take_a, ia, ib))

    def encode(self, specs: Sequence[ArchSpec] | ArchSpec) -> np.ndarray:
        """(N, n_positions · n_ops) float32 one-hot, position-major (a single spec gives N = 1)."""
        batch = [specs] if isinstance(specs, ArchSpec) else list(specs)
        return self.encoding.one_hot([self.validate(s) for s in batch])

    def enumerate(self) -> Iterator[ArchSpec]:
        """Every architecture once, in op-code order (position 0 slowest; not the NB201 table index order)."""
        if self.size > MAX_ENUMERATE:
            raise UnsupportedOpError(f"{self.name} has {self.size:.3g} architectures, more than the "
                                     f"{MAX_ENUMERATE:,} that enumerate() allows; sample() instead")
        for ops in itertools.product(self.encoding.ops, repeat=self.encoding.n_positions):
            yield ArchSpec(self.name, {"ops": ops})

    def _from_indices(self, idx: np.ndarray) -> ArchSpec:
        return self.encoding.spec([self.encoding.ops[int(i)] for i in idx])


SPACES: Registry[Space] = Registry("search space")

S = TypeVar("S", bound=type[Space])


def register_space(cls: S) -> S:
    """Class decorator: registers one (stateless) instance of `cls` under `cls.name`."""
    SPACES.add(cls.name, cls())
    return cls


def get_space(name: str) -> Space:
    """The registered space `name` (ConfigError listing the known names on a miss)."""
    return SPACES.get(name)


def list_spaces() -> list[str]:
    return SPACES.names()
