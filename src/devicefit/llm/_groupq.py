"""Round-to-nearest quantization of a weight matrix on a `Grid`, row-wise groups, with an
optional ragged last group when the row length is not a multiple of the group size."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from devicefit.core import ConfigError

from ._grids import Grid

__all__ = ["QuantizedMatrix", "group_bounds", "quantize_matrix"]


@dataclass
class QuantizedMatrix:
    """Codes (rows, cols) uint8 with per-group d/m (rows, n_groups) float32 on `grid`."""

    grid: Grid
    codes: torch.Tensor
    d: torch.Tensor
    m: torch.Tensor
    bounds: list[tuple[int, int]]

    def dequantize(self) -> torch.Tensor:
        out = torch.empty(self.codes.shape, dtype=torch.float32)
        for j, (a, b) in enumerate(self.bounds):
            out[:, a:b] = self.grid.values(self.codes[:, a:b], self.d[:, j:j + 1], self.m[:, j:j + 1])
        return out

    @property
    def bits_per_weight(self) -> float:
        cols = self.codes.shape[1]
        return self.grid.bits + 16 * self.grid.n_params * len(self.bounds) / cols


def group_bounds(cols: int, grid: Grid, ragged: bool, name: str = "weight") -> list[tuple[int, int]]:
    """Column ranges of the groups of one row; a non-dividing group size raises unless `ragged`."""
    g = grid.group_size or cols
    if cols % g and not ragged:
        raise ConfigError(f"{name}: group_size {g} does not divide its row length {cols}; "
                          "pick a divisor or allow a ragged last group (ragged=True)")
    return [(a, min(a + g, cols)) for a in range(0, cols, g)]


def quantize_matrix(w: torch.Tensor, grid: Grid, *, ragged: bool = False, name: str = "weight") -> QuantizedMatrix:
    """Round-to-nearest `w` (out, in) group by group along each row (the input dimension)."""
    w = w.detach().float()
    bounds = group_bounds(w.shape[1], grid, ragged, name)
    codes = torch.empty(w.shape, dtype=torch.uint8)
    d = torch.empty(w.shape[0], len(bounds))
    m = torch.empty_like(d)
    g = grid.group_size or w.shape[1]
    full = w.shape[1] // g
    if full:  # all complete groups at once
        blocks = w[:, :full * g].reshape(w.shape[0], full, g)
        dd, mm = grid.params(blocks)
        codes[:, :full * g] = grid.codes(blocks, dd, mm).reshape(w.shape[0], -1)
        d[:, :full], m[:, :full] = dd[..., 0], mm[..., 0]
    if full < len(bounds):
        a = full * g
        dd, mm = grid.params(w[:, a:])
        codes[:, a:] = grid.codes(w[:, a:], dd, mm)
        d[:, full:], m[:, full:] = dd, mm
    return QuantizedMatrix(grid, codes, d, m, bounds)


def search_params(w: torch.Tensor, grid: Grid, ratios: tuple[float, ...] = (), norm: float = 2.4,
                  xw: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group (d, m) for groups `w` (..., G), each taken from the range shrunk by the ratio in
    `ratios` (plus 1.0) minimizing sum |w - Q(w)|^norm, weighted per column by `xw` (e.g. mean
    input energy) when given, as GPTQ's `mse` grid and AWQ's clipping do."""
    d, m = grid.params(w)
    if not ratios:
        return d, m
    weight = xw if xw is not None else torch.ones(w.shape[-1])
    best = ((grid.fake(w, d, m) - w).abs().pow(norm) * weight).sum(-1, keepdim=True)
    for r in ratios:
        dr, mr = grid.params(w * r)
        err = ((grid.fake(w, dr, mr) - w).abs().pow(norm) * weight).sum(-1, keepdim=True)
        better = err < best
        d, m, best = torch.where(better, dr, d), torch.where(better, mr, m), torch.where(better, err, best)
    return d, m
