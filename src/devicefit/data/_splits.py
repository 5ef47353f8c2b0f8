"""Validation and calibration sets drawn only from a train split, seeded and stratified,
so no search, early-stopping or quantization-calibration step ever sees the test split.
"""

from __future__ import annotations

import numpy as np

from devicefit.core import ConfigError, DataError

from ._dataset import ArrayDataset

__all__ = ["calibration_split", "split_train_val"]


def _check_train(ds: ArrayDataset, what: str) -> None:
    if not isinstance(ds, ArrayDataset):
        raise ConfigError(f"{what} expects an ArrayDataset, got {type(ds).__name__}")
    if ds.split == "test" or "test" in ds.split.split("/"):
        raise DataError(f"{what} draws only from a train split; got {ds.name} split {ds.split!r} "
                        f"(the test split is for the final held-out report)")


def _stratified_pick(y: np.ndarray, fraction: float, rng: np.random.Generator, stratify: bool) -> np.ndarray:
    """Indices of about `fraction` of the examples (per class when `stratify`), sorted."""
    if not stratify:
        n = round(fraction * len(y))
        return np.sort(rng.permutation(len(y))[:n])
    picked = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        n = round(fraction * len(members))
        picked.append(rng.permutation(members)[:n])
    return np.sort(np.concatenate(picked)).astype(np.int64)


def split_train_val(ds: ArrayDataset, val_fraction: float = 0.1, seed: int = 0,
                    stratify: bool = True) -> tuple[ArrayDataset, ArrayDataset]:
    """Split a train split into (train, val), disjoint, deterministic for a given `seed`.

    With `stratify`, each class gives round(val_fraction * its count) examples to val. Both
    keep the original order; their split names are "train" and "val". `val_fraction=0` gives an
    empty val set. A test split raises `DataError`.
    """
    _check_train(ds, "split_train_val")
    if not isinstance(val_fraction, int | float) or isinstance(val_fraction, bool) or not 0 <= val_fraction < 1:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    val_idx = _stratified_pick(ds.y, val_fraction, np.random.default_rng(seed), stratify)
    if val_fraction > 0 and (len(val_idx) == 0 or len(val_idx) == len(ds)):
        raise DataError(f"val_fraction={val_fraction} of {len(ds)} examples leaves an empty train or val set")
    train_idx = np.setdiff1d(np.arange(len(ds)), val_idx, assume_unique=True)
    return ds.subset(train_idx, "train"), ds.subset(val_idx, "val")


def calibration_split(ds: ArrayDataset, n: int, seed: int = 0) -> ArrayDataset:
    """`n` examples of a train split for calibration (e.g. int8 activation ranges), class-stratified.

    Deterministic for a given `seed`; the result's split name is "calibration". A test split raises
    `DataError`; `n` larger than the dataset raises `ConfigError`.
    """
    _check_train(ds, "calibration_split")
    if not isinstance(n, int) or isinstance(n, bool) or not 0 < n <= len(ds):
        raise ConfigError(f"n must be an int in 1..{len(ds)} (the size of {ds.name}/{ds.split}), got {n!r}")
    rng = np.random.default_rng(seed)
    order = _round_robin_by_class(ds.y, rng)
    return ds.subset(np.sort(order[:n]), "calibration")


def _round_robin_by_class(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """All indices, shuffled within each class, then interleaved class by class (stratified prefixes)."""
    per_class = [rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)]
    rank = np.empty(len(y), dtype=np.float64)
    for members in per_class:
        # spread each class evenly over [0, 1) so every prefix holds classes in proportion
        rank[members] = (np.arange(len(members)) + rng.random()) / len(members)
    return np.argsort(rank, kind="stable")
