"""Group-wise integer grids: how one group of weights maps to codes and back. The three shapes
follow ggml's reference quantizers bit for bit (Q8_0 abs-max, Q4_0/Q5_0 signed max, Q4_1 min-max);
any bit width and group size is allowed, and `GRIDS` names the GGUF ones."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from devicefit.core import ConfigError, Registry

__all__ = ["GRIDS", "AbsMaxGrid", "Grid", "MinMaxGrid", "SignedMaxGrid", "parse_grid"]


def roundf(x: torch.Tensor) -> torch.Tensor:
    """C `roundf` (half away from zero), as ggml and `gguf.quants.np_roundf` compute it."""
    a = x.abs()
    f = torch.floor(a)
    return torch.sign(x) * (f + torch.floor(2 * (a - f)))


def _inv(d: torch.Tensor) -> torch.Tensor:
    return torch.where(d == 0, torch.zeros_like(d), 1 / torch.where(d == 0, torch.ones_like(d), d))


@dataclass(frozen=True)
class Grid(ABC):
    """`bits` per code, `group_size` weights per (scale[, min]) pair; scales/mins are stored fp16.

    Contract: `params(w)` takes groups (..., G) in float32 and returns (d, m) shaped (..., 1);
    `codes(w, d, m)` gives integer codes in [0, 2**bits); `values(codes, d, m)` dequantizes with
    the fp16-rounded d and m, exactly as a reader of the stored format would.
    """

    bits: int
    group_size: int

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 8:
            raise ConfigError(f"bits must be in 2..8, got {self.bits}")
        if self.group_size < 0:
            raise ConfigError(f"group_size must be >= 0 (0 = one group per row), got {self.group_size}")

    @property
    def name(self) -> str:
        g = f"g{self.group_size}" if self.group_size else "row"
        return f"int{self.bits}-{g}-{self.kind}"

    kind = "?"
    n_params = 1

    def bits_per_weight(self, row_len: int) -> float:
        g = self.group_size or row_len
        return self.bits + 16 * self.n_params / g

    @abstractmethod
    def params(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    @abstractmethod
    def codes(self, w: torch.Tensor, d: torch.Tensor, m: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def values(self, codes: torch.Tensor, d: torch.Tensor, m: torch.Tensor) -> torch.Tensor: ...

    def fake(self, w: torch.Tensor, d: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """Quantize then dequantize `w` with given params (what GPTQ calls per column)."""
        return self.values(self.codes(w, d, m), d, m)


def _h(x: torch.Tensor) -> torch.Tensor:
    return x.half().float()


@dataclass(frozen=True)
class AbsMaxGrid(Grid):
    """d = max|w| / (2^(b-1)-1), code = roundf(w/d) + 2^(b-1); Q8_0 at b=8, G=32."""

    kind = "absmax"

    def params(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = w.abs().amax(-1, keepdim=True) / (2 ** (self.bits - 1) - 1)
        return d, torch.zeros_like(d)

    def codes(self, w: torch.Tensor, d: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        half = 2 ** (self.bits - 1)
        return (roundf(w * _inv(d)).clamp(1 - half, half - 1) + half).to(torch.uint8)

    def values(self, codes: torch.Tensor, d: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return (codes.float() - 2 ** (self.bits - 1)) * _h(d)


@dataclass(frozen=True)
class SignedMaxGrid(Grid):
    """d = w[argmax|w|] / -2^(b-1), code = trunc(w/d + 2^(b-1) + 0.5); Q4_0 (b=4), Q5_0 (b=5)."""

    kind = "sym"

    def params(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mx = torch.gather(w, -1, w.abs().argmax(-1, keepdim=True))
        d = mx / -(2 ** (self.bits - 1))
        return d, torch.zeros_like(d)

    def codes(self, w: torch.Tensor, d: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        off = torch.tensor(2 ** (self.bits - 1) + 0.5, dtype=torch.float32)
        return torch.trunc(w * _inv(d) + off).clamp(0, 2 ** self.bits - 1).to(torch.uint8)

    def values(self, codes: torch.Tensor, d: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return (codes.float() - 2 ** (self.bits - 1)) * _h(d)


@dataclass(frozen=True)
class MinMaxGrid(Grid):
    """d = (max-min)/(2^b-1), m = min, code = trunc((w-m)/d + 0.5); Q4_1 at b=4, G=32."""

    kind = "asym"
    n_params = 2

    def params(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
        return (hi - lo) / (2 ** self.bits - 1), lo

    def codes(self, w: torch.Tensor, d: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        half = torch.tensor(0.5, dtype=torch.float32)
        return torch.trunc((w - m) * _inv(d) + half).clamp(0, 2 ** self.bits - 1).to(torch.uint8)

    def values(self, codes: torch.Tensor, d: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return codes.float() * _h(d) + _h(m)


GRIDS: Registry[Grid] = Registry("GGUF grid")
GRIDS.add("q8_0", AbsMaxGrid(8, 32))
GRIDS.add("q4_0", SignedMaxGrid(4, 32))
GRIDS.add("q4_1", MinMaxGrid(4, 32))
GRIDS.add("q5_0", SignedMaxGrid(5, 32))

_INT = re.compile(r"^int(\d)-(g(\d+)|row)-(sym|asym|absmax)$")
_KINDS = {"sym": SignedMaxGrid, "asym": MinMaxGrid, "absmax": AbsMaxGrid}


def parse_grid(name: str) -> Grid:
    """A grid from `q8_0|q4_0|q4_1|q5_0` or `int{bits}-g{G}|row-sym|asym|absmax` (e.g. `int4-g32-asym`)."""
    key = name.strip().lower()
    if key in GRIDS:
        return GRIDS.get(key)
    m = _INT.match(key)
    if not m:
        raise ConfigError(f"weight format {name!r} not understood; expected one of {GRIDS.names()} "
                          "or int<bits>-g<group>|row-sym|asym|absmax, e.g. int4-g32-asym")
    return _KINDS[m.group(4)](int(m.group(1)), int(m.group(3) or 0))


def grid_name(grid: Grid) -> str:
    """The GGUF name of `grid` when it is one, else its int-grid name."""
    for n in GRIDS.names():
        if GRIDS.get(n) == grid:
            return n
    return grid.name
