"""Cell encodings of the table-backed NAS spaces (NAS-Bench-201, FBNet): op vocabularies,
`ArchSpec` ↔ table op codes, one-hot features and per-layer keys for latency predictors.

Kept in `hardware` because the measured tables and the predictors need them; the search
spaces in `devicefit.space` reuse them (imports point down).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from devicefit.core import ArchSpec, ConfigError, Registry

__all__ = ["ENCODINGS", "FBNET", "NB201", "CellEncoding", "get_encoding"]


@dataclass(frozen=True)
class CellEncoding:
    """A fixed-length choice space: `n_positions` slots, each one op of `ops`.

    A spec is `ArchSpec(family, {"ops": (op name per position, ...)})`. `code` is the
    table's digit string (op index per position, in position order).
    """

    family: str
    ops: tuple[str, ...]
    n_positions: int
    position_names: tuple[str, ...]
    version: int = 1

    @property
    def n_features(self) -> int:
        return self.n_positions * len(self.ops)

    def spec(self, ops: Sequence[str]) -> ArchSpec:
        """The canonical spec of a cell; raises ConfigError naming a bad op or length."""
        ops = tuple(ops)
        if len(ops) != self.n_positions:
            raise ConfigError(f"{self.family}: expected {self.n_positions} ops, got {len(ops)}")
        for pos, op in zip(self.position_names, ops, strict=True):
            if op not in self.ops:
                raise ConfigError(f"{self.family}: op {op!r} at {pos} is not one of {', '.join(self.ops)}")
        return ArchSpec(self.family, {"ops": ops})

    def ops_of(self, spec: ArchSpec) -> tuple[str, ...]:
        if spec.family != self.family:
            raise ConfigError(f"expected a {self.family!r} spec, got family {spec.family!r}")
        ops = spec.get("ops")
        if ops is None:
            raise ConfigError(f"{self.family} spec needs an 'ops' parameter, got {spec}")
        return self.spec(ops)["ops"]  # type: ignore[no-any-return]

    def from_code(self, code: str | int) -> ArchSpec:
        digits = str(code).zfill(self.n_positions)
        if len(digits) != self.n_positions or not digits.isdigit() or max(map(int, digits)) >= len(self.ops):
            raise ConfigError(f"{self.family}: op code {code!r} is not {self.n_positions} digits "
                              f"in 0..{len(self.ops) - 1}")
        return self.spec([self.ops[int(d)] for d in digits])

    def to_code(self, spec: ArchSpec) -> str:
        return "".join(str(self.ops.index(op)) for op in self.ops_of(spec))

    def indices(self, specs: Sequence[ArchSpec]) -> np.ndarray:
        """(N, n_positions) int64 op indices."""
        return np.array([[self.ops.index(op) for op in self.ops_of(s)] for s in specs], dtype=np.int64)

    def one_hot(self, specs: Sequence[ArchSpec]) -> np.ndarray:
        """(N, n_positions * n_ops) float32 one-hot, position-major."""
        idx = self.indices(specs)
        out = np.zeros((len(idx), self.n_positions, len(self.ops)), dtype=np.float32)
        np.put_along_axis(out, idx[:, :, None], 1.0, axis=2)
        return out.reshape(len(idx), -1)

    def layer_keys(self, spec: ArchSpec) -> tuple[str, ...]:
        """One lookup-table key per position: `"<position>:<op>"`."""
        return tuple(f"{p}:{op}" for p, op in zip(self.position_names, self.ops_of(spec), strict=True))


# NAS-Bench-201: 6 edges of a 4-node cell, in the tables' order 0→1, 0→2, 1→2, 0→3, 1→3, 2→3.
NB201 = CellEncoding(
    family="nb201",
    ops=("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"),
    n_positions=6,
    position_names=("e0_1", "e0_2", "e1_2", "e0_3", "e1_3", "e2_3"),
)

# FBNet: 22 searchable layers, 9 block choices (kernel, expansion, group) or skip.
FBNET = CellEncoding(
    family="fbnet",
    ops=("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip"),
    n_positions=22,
    position_names=tuple(f"l{i:02d}" for i in range(22)),
)

ENCODINGS: Registry[CellEncoding] = Registry("cell encoding")
ENCODINGS.add(NB201.family, NB201)
ENCODINGS.add(FBNET.family, FBNET)


def get_encoding(family: str) -> CellEncoding:
    return ENCODINGS.get(family)
