"""Validation and calibration sets: drawn from train only, disjoint, stratified, deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from devicefit.core import ConfigError, DataError
from devicefit.data import ArrayDataset, calibration_split, load_dataset, split_train_val


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.delenv("DEVICEFIT_DATA_DIR", raising=False)
    monkeypatch.setenv("DEVICEFIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "splits-cache"))


def _toy(n: int = 200, split: str = "train") -> ArrayDataset:
    x = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1)
    y = np.repeat(np.arange(4), n // 4)
    return ArrayDataset("toy", split, x, y, ("a", "b", "c", "d"), "generated", (0.5,), (0.25,),
                        groups=np.array([f"g{i % 5}" for i in range(n)]), meta={"take_index": np.arange(n)})


def test_train_val_disjoint_stratified_deterministic() -> None:
    ds = _toy()
    train, val = split_train_val(ds, 0.1, seed=3)
    assert (train.split, val.split) == ("train", "val") and len(train) + len(val) == len(ds)
    assert not set(train.x.ravel().tolist()) & set(val.x.ravel().tolist())
    assert np.bincount(val.y).tolist() == [5, 5, 5, 5]
    again = split_train_val(ds, 0.1, seed=3)[1]
    assert np.array_equal(again.x, val.x)
    other = split_train_val(ds, 0.1, seed=4)[1]
    assert not np.array_equal(other.x, val.x)
    # per-example meta and groups follow the selection
    assert np.array_equal(val.meta["take_index"], val.x.ravel()) and val.groups.shape == (len(val),)


def test_calibration_is_stratified_prefix_and_deterministic() -> None:
    ds = _toy()
    calib = calibration_split(ds, 40, seed=1)
    assert calib.split == "calibration" and len(calib) == 40
    assert np.bincount(calib.y).tolist() == [10, 10, 10, 10]
    assert np.array_equal(calibration_split(ds, 40, seed=1).x, calib.x)
    assert len(np.unique(calib.x)) == 40
    with pytest.raises(ConfigError, match=r"n must be an int in 1..200"):
        calibration_split(ds, 201)


def test_test_split_is_refused() -> None:
    ds = _toy(split="test")
    with pytest.raises(DataError, match=r"split_train_val draws only from a train split.*'test'"):
        split_train_val(ds)
    with pytest.raises(DataError, match=r"calibration_split draws only from a train split"):
        calibration_split(ds, 10)
    with pytest.raises(ConfigError, match=r"val_fraction must be in \[0, 1\), got 1.5"):
        split_train_val(_toy(), 1.5)
    train, val = split_train_val(_toy(), 0.0)
    assert len(train) == 200 and len(val) == 0


def test_fsdd_val_and_calibration_never_touch_test_takes() -> None:
    train, test = load_dataset("fsdd", "train"), load_dataset("fsdd", "test")
    _, val = split_train_val(train, 0.2, seed=0)
    calib = calibration_split(train, 100, seed=0)
    test_keys = set(zip(test.groups.tolist(), test.meta["take_index"].tolist(), test.y.tolist(), strict=True))
    for part in (val, calib):
        keys = set(zip(part.groups.tolist(), part.meta["take_index"].tolist(), part.y.tolist(), strict=True))
        assert not keys & test_keys and part.meta["take_index"].min() >= 5


def test_mnist_val_images_are_not_test_images() -> None:
    train, test = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    _, val = split_train_val(train, 0.1, seed=0)
    test_rows = {row.tobytes() for row in test.x}
    assert len(val) == 1000 and not any(row.tobytes() in test_rows for row in val.x)
