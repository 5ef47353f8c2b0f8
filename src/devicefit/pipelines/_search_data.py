"""Training and validation splits for the jobs that train a supernet (LightNAS, HSCoNAS-style searches)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from devicefit.core import ConfigError

__all__ = ["search_splits"]


def search_splits(data: str, data_dir: str | None, *, space: str, input_shape: Sequence[int], val_fraction: float,
                  n_train: int, batch_size: int, seed: int) -> tuple[Any, Any, int]:
    """(train, val, num_classes) of `data`'s train split, `val_fraction` held out (seeded, stratified); with
    `n_train` > 0 a seeded random subset of that many training images and n_train / 5 (at least one batch)
    validation images. ConfigError when the data's input shape is not the space's `input_shape`."""
    from devicefit import data as D

    full = D.load_dataset(data, "train", data_dir)
    if tuple(full.input_shape) != tuple(input_shape):
        raise ConfigError(f"data {data!r} has input shape {tuple(full.input_shape)}, space {space!r} expects "
                          f"{tuple(input_shape)}; pick the space made for this data (mbconv: 32x32 images, "
                          "mbconv_kws: audio features)")
    train, val = D.split_train_val(full, val_fraction, seed=seed)
    if n_train and n_train < len(train):  # a random subset (splits are stored class by class)
        rng = np.random.default_rng(seed)
        train = train.subset(np.sort(rng.permutation(len(train))[:n_train]))
        val = val.subset(np.sort(rng.permutation(len(val))[: max(n_train // 5, batch_size)]))
    return train, val, full.num_classes
