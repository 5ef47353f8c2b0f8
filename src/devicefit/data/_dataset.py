"""The in-memory dataset record every loader returns, and the dataset registry.

Datasets here are small enough to hold in memory (CIFAR-10 full: 150 MB as uint8),
so a loader decodes once (cached), and training iterates over arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from devicefit.core import DataError, Registry

__all__ = ["DATASETS", "ArrayDataset", "DatasetInfo", "list_datasets", "register_dataset"]


@dataclass(frozen=True, eq=False)
class ArrayDataset:
    """One split of a dataset held as arrays.

    x: images uint8 (N, C, H, W) or features float32 (N, C, F, T); y: int64 (N,).
    `source` says where the data came from ("bundled subset ..." or a path), so every
    result can state whether it used the full copy. `groups` holds an optional
    per-example group label (e.g. FSDD speaker) for group-held-out splits.
    `mean`/`std` (per channel, in the units of x after uint8 → [0, 1] scaling for images)
    define the normalisation the loader applies.
    """

    name: str
    split: str
    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    source: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    groups: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.x.ndim != 4:
            raise DataError(f"{self.name}/{self.split}: x must be 4-D (N, C, H, W), got shape {self.x.shape}")
        if self.y.shape != (self.x.shape[0],):
            raise DataError(f"{self.name}/{self.split}: y shape {self.y.shape} does not match "
                            f"x count {self.x.shape[0]}")
        if len(self.y) and (self.y.min() < 0 or self.y.max() >= len(self.classes)):
            raise DataError(f"{self.name}/{self.split}: labels must be in [0, {len(self.classes)}), "
                            f"got [{self.y.min()}, {self.y.max()}]")
        if len(self.mean) != self.x.shape[1] or len(self.std) != self.x.shape[1]:
            raise DataError(f"{self.name}: mean/std need one value per channel ({self.x.shape[1]})")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one example."""
        return tuple(int(s) for s in self.x.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, indices: np.ndarray, split: str | None = None) -> ArrayDataset:
        """A new dataset holding `indices` (copied arrays). Per-example arrays in `meta`
        (leading dimension N, e.g. FSDD `take_index`) are indexed too; other meta is shared."""
        idx = np.asarray(indices, dtype=np.int64)
        meta = {k: v[idx] if isinstance(v, np.ndarray) and v.shape[:1] == (len(self),) else v
                for k, v in self.meta.items()}
        return ArrayDataset(
            name=self.name, split=split or self.split, x=self.x[idx], y=self.y[idx], classes=self.classes,
            source=self.source, mean=self.mean, std=self.std,
            groups=None if self.groups is None else self.groups[idx], meta=meta,
        )


@dataclass(frozen=True)
class DatasetInfo:
    """Registry entry: how to load a dataset and what it is.

    `load(split, data_dir, **options) -> ArrayDataset` with split in `splits`.
    `augment` names the default train-time augmentation ("crop_flip", "crop", "time_shift", "none").
    """

    name: str
    load: Callable[..., ArrayDataset]
    input_shape: tuple[int, int, int]
    num_classes: int
    description: str
    license: str
    splits: tuple[str, ...] = ("train", "test")
    augment: str = "none"


DATASETS: Registry[DatasetInfo] = Registry("dataset")


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    DATASETS.add(info.name, info)
    return info


def list_datasets() -> list[DatasetInfo]:
    return [DATASETS.get(n) for n in DATASETS.names()]
