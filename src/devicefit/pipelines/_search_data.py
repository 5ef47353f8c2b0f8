"""Data for the jobs that train a supernet (LightNAS, HSCoNAS-style searches): their training and validation
splits, and the from-scratch retraining of the network they choose."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from devicefit.core import ConfigError

__all__ = ["retrain_from_scratch", "search_splits"]


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


def retrain_from_scratch(space: Any, spec: Any, data: str, splits: tuple[Any, Any, Any], num_classes: int,
                         cfg: Any, run_dir: Path, *, log: Callable[[str], None],
                         progress: bool = False) -> dict[str, Any]:
    """Train `space.build(spec)` (`num_classes` outputs, the space's input shape) from freshly seeded weights
    (`cfg.seed`) with the `TrainConfig` `cfg` on `splits` = (train, val, test) of `data` (whose registered
    augmentation applies), checkpointed in `run_dir` so a killed run resumes; returns {epochs, test_accuracy,
    test_images, val_accuracy, train_seconds}."""
    import torch

    from devicefit import data as D
    from devicefit import train as T

    train, val, test = splits
    torch.manual_seed(cfg.seed)
    fresh = space.build(spec, num_classes=num_classes, input_shape=space.input_shape)
    log(f"retraining the chosen network from scratch for {cfg.epochs} epoch(s)")
    res = T.fit(fresh, train, cfg, val_ds=val, run_dir=run_dir, progress=progress, log=log,
                augment_default=D.DATASETS.get(data).augment)
    acc = float(T.evaluate(fresh, test)["accuracy"])
    log(f"retrained: test accuracy {100 * acc:.2f}% on {len(test)} test images")
    return {"epochs": cfg.epochs, "test_accuracy": acc, "test_images": len(test),
            "val_accuracy": res.final.get("val_acc"), "train_seconds": res.train_seconds}
