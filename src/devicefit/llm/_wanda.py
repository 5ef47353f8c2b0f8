"""Pruning a `Llama`'s block matrices without retraining: Wanda (Sun et al., 2023) scores each
weight |W_ij| * ||X_j||_2 from calibration activations and drops the lowest per output row
(unstructured) or per N:M group of inputs (e.g. 2:4); magnitude pruning is the |W| baseline."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from devicefit.core import ConfigError, DataError, Registry

from ._calib import block_inputs, capture_linear_inputs, run_block
from ._model import Llama

__all__ = ["PRUNE_SCORES", "PruneConfig", "PrunedLlama", "prune_llama"]

_NM = re.compile(r"^(\d+):(\d+)$")

PRUNE_SCORES: Registry[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = Registry("pruning score")
PRUNE_SCORES.add("wanda", lambda w, x: w.abs() * x.float().pow(2).sum(0).sqrt()[None, :])
PRUNE_SCORES.add("magnitude", lambda w, x: w.abs())


@dataclass(frozen=True)
class PruneConfig:
    """`pattern`: `unstructured` (drop the `sparsity` fraction of each output row) or `N:M`
    (keep N of every M consecutive inputs of a row; sparsity is then 1 - N/M); `score`: a
    registered score (`wanda`, `magnitude`)."""

    pattern: str = "unstructured"
    sparsity: float = 0.5
    score: str = "wanda"

    def __post_init__(self) -> None:
        if self.pattern != "unstructured":
            m = _NM.match(self.pattern)
            if not m or not 0 < int(m.group(1)) < int(m.group(2)):
                raise ConfigError(f"pattern must be 'unstructured' or 'N:M' with 0 < N < M, got {self.pattern!r}")
        elif not 0 <= self.sparsity < 1:
            raise ConfigError(f"sparsity must be in [0, 1), got {self.sparsity}")
        PRUNE_SCORES.get(self.score)

    @property
    def target_sparsity(self) -> float:
        m = _NM.match(self.pattern)
        return 1 - int(m.group(1)) / int(m.group(2)) if m else self.sparsity


@dataclass
class PrunedLlama:
    """The pruned copy and, per block matrix, its keep-mask (True = kept)."""

    model: Llama
    masks: dict[str, torch.Tensor]

    def sparsity(self) -> float:
        """Fraction of block-matrix weights removed."""
        return 1 - sum(int(m.sum()) for m in self.masks.values()) / sum(m.numel() for m in self.masks.values())


def _mask(score: torch.Tensor, config: PruneConfig, name: str) -> torch.Tensor:
    rows, cols = score.shape
    m = _NM.match(config.pattern)
    if m:
        n_keep, size = int(m.group(1)), int(m.group(2))
        if cols % size:
            raise ConfigError(f"{name}: row length {cols} is not a multiple of the {config.pattern} group size {size}")
        s = score.reshape(rows, cols // size, size)
        keep = torch.zeros_like(s, dtype=torch.bool).scatter_(-1, s.topk(n_keep, -1).indices, True)
        return keep.reshape(rows, cols)
    n_drop = int(cols * config.sparsity)
    keep = torch.ones_like(score, dtype=torch.bool)
    if n_drop:
        keep.scatter_(1, score.topk(n_drop, 1, largest=False).indices, False)
    return keep


@torch.no_grad()
def prune_llama(model: Llama, config: PruneConfig, calib_seqs: list[list[int]]) -> PrunedLlama:
    """Prune a copy of `model` block by block; each block's activations come from the already
    pruned blocks before it (as in Wanda's code). `model` is not changed."""
    if not calib_seqs:
        raise DataError("calib_seqs: pruning needs at least one calibration sequence, got none")
    work = copy.deepcopy(model)
    score_fn = PRUNE_SCORES.get(config.score)
    masks = {}
    xs = block_inputs(work, calib_seqs)
    for i, blk in enumerate(work.layers):
        with capture_linear_inputs(blk) as seen:
            run_block(work, i, xs)
        for short, xi in seen.items():
            name = f"layers.{i}.{short}"
            lin = work.get_submodule(name)
            keep = _mask(score_fn(lin.weight, torch.cat(xi)), config, name)
            lin.weight.mul_(keep)
            masks[name] = keep
        xs = run_block(work, i, xs)
    return PrunedLlama(work, masks)
