"""Batches for training and evaluation: normalisation and light, seeded augmentation.

Augmentation runs on whole batches with torch ops (random crop with zero padding,
horizontal flip, time shift for (C, frames, coeffs) audio features), driven by a `torch.Generator` so a
seeded run is repeatable.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from devicefit.core import check_choice, check_positive

from ._dataset import ArrayDataset

__all__ = ["AUGMENTATIONS", "BatchLoader", "to_float_tensor"]

AUGMENTATIONS = ("none", "crop", "crop_flip", "time_shift")


def to_float_tensor(ds: ArrayDataset, x: np.ndarray) -> torch.Tensor:
    """Normalise raw examples of `ds` to float32: uint8 images are scaled to [0, 1] first."""
    t = torch.from_numpy(np.ascontiguousarray(x))
    t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
    mean = torch.tensor(ds.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(ds.std, dtype=torch.float32).view(1, -1, 1, 1)
    return (t - mean) / std


class BatchLoader:
    """Iterate over (x, y) float/long tensor batches of an `ArrayDataset`.

    Each `iter()` reshuffles with the generator when `shuffle`; `augment` applies to
    every batch. `len()` is the number of batches.
    """

    def __init__(self, ds: ArrayDataset, batch_size: int, *, shuffle: bool = False, augment: str = "none",
                 seed: int = 0, drop_last: bool = False, pad: int = 4) -> None:
        check_positive("batch_size", batch_size)
        check_choice("augment", augment, AUGMENTATIONS)
        self.ds, self.batch_size, self.shuffle, self.augment = ds, int(batch_size), shuffle, augment
        self.drop_last, self.pad = drop_last, pad
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.ds)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.ds)
        order = torch.randperm(n, generator=self.generator).numpy() if self.shuffle else np.arange(n)
        for b in range(len(self)):
            idx = np.sort(order[b * self.batch_size:(b + 1) * self.batch_size])
            x = to_float_tensor(self.ds, self.ds.x[idx])
            y = torch.from_numpy(self.ds.y[idx].astype(np.int64))
            yield self._augment(x), y

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        if self.augment in ("crop", "crop_flip"):
            x = _random_crop(x, self.pad, self.generator)
        if self.augment == "crop_flip":
            flip = torch.rand(x.shape[0], generator=self.generator) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        if self.augment == "time_shift":
            x = _time_shift(x, max(1, x.shape[2] // 10), self.generator)
        return x


def _random_crop(x: torch.Tensor, pad: int, g: torch.Generator) -> torch.Tensor:
    """Zero-pad by `pad` on each side and crop back at a random offset per example."""
    B, _, H, W = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (B,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (B,), generator=g)
    rows = (dy.view(B, 1) + torch.arange(H).view(1, H))  # B, H
    cols = (dx.view(B, 1) + torch.arange(W).view(1, W))  # B, W
    bidx = torch.arange(B).view(B, 1, 1)
    out = padded.permute(0, 2, 3, 1)[bidx, rows.view(B, H, 1), cols.view(B, 1, W)]  # B, H, W, C
    return out.permute(0, 3, 1, 2).contiguous()


def _time_shift(x: torch.Tensor, max_shift: int, g: torch.Generator) -> torch.Tensor:
    """Shift features along time (axis 2: features are (C, frames, coeffs)) by up to
    ±max_shift frames, zero-filled."""
    B, _, T, _ = x.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (B,), generator=g)
    t = torch.arange(T).view(1, T) - shifts.view(B, 1)  # B, T: source frame per output frame
    valid = (t >= 0) & (t < T)
    gathered = x.gather(2, t.clamp(0, T - 1).view(B, 1, T, 1).expand_as(x))
    return gathered * valid.view(B, 1, T, 1)
