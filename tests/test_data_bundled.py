"""Every registered dataset loads from its bundled subset with the documented shapes, labels and balance;
the bundled files match their manifest; the full copies in ../shared/data load when present."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from devicefit.core import ConfigError
from devicefit.data import DATASETS, BatchLoader, list_datasets, load_dataset, prepare
from devicefit.data._paths import bundled_dir

SHARED_DATA = Path(__file__).parents[1] / ".." / "shared" / "data"
BUNDLED = bundled_dir("x").parent

# name -> (per-split counts, example shape, dtype)
EXPECTED = {
    "cifar10": ({"train": 5000, "test": 1000}, (3, 32, 32), np.uint8),
    "mnist": ({"train": 10000, "test": 2000}, (1, 28, 28), np.uint8),
    "fsdd": ({"train": 2700, "test": 300}, (1, 49, 10), np.float32),
}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.delenv("DEVICEFIT_DATA_DIR", raising=False)
    monkeypatch.setenv("DEVICEFIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "bundled-cache"))


def test_registry_lists_all_datasets() -> None:
    assert {"cifar10", "mnist", "fsdd", "imagefolder"} <= set(DATASETS.names())
    assert [i.name for i in list_datasets()] == DATASETS.names()
    assert DATASETS.get("cifar10").augment == "crop_flip"
    assert DATASETS.get("mnist").augment == "crop"
    assert DATASETS.get("fsdd").augment == "time_shift"


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("split", ["train", "test"])
def test_bundled_subset_loads(name: str, split: str) -> None:
    counts, shape, dtype = EXPECTED[name]
    ds = load_dataset(name, split)
    assert (ds.name, ds.split, len(ds)) == (name, split, counts[split])
    assert ds.input_shape == shape == DATASETS.get(name).input_shape
    assert ds.x.dtype == dtype and ds.y.dtype == np.int64
    assert ds.num_classes == 10 and set(np.unique(ds.y)) == set(range(10))
    per_class = np.bincount(ds.y, minlength=10)
    assert per_class.min() == per_class.max() == counts[split] // 10  # balanced subsets
    assert ds.source.startswith("bundled") and f"{counts['train']} train / {counts['test']} test" in ds.source
    assert np.isfinite(ds.x.astype(np.float64)).all()


def test_cifar10_classes_and_statistics() -> None:
    ds = load_dataset("cifar10", "train")
    assert ds.classes[0] == "airplane" and ds.classes[-1] == "truck" and len(set(ds.classes)) == 10
    assert ds.mean == pytest.approx((0.4914, 0.4822, 0.4465), abs=1e-4)
    assert ds.std == pytest.approx((0.2470, 0.2435, 0.2616), abs=1e-4)
    # the subset's own pixel statistics agree with the published full-set values
    pixel_mean = ds.x.mean(axis=(0, 2, 3)) / 255.0
    assert np.allclose(pixel_mean, ds.mean, atol=0.02)


def test_fsdd_groups_takes_and_normalisation() -> None:
    train, test = load_dataset("fsdd", "train"), load_dataset("fsdd", "test")
    assert set(train.groups.tolist()) == set(test.groups.tolist()) == {
        "george", "jackson", "lucas", "nicolas", "theo", "yweweler"}
    assert train.meta["take_index"].min() == 5 and test.meta["take_index"].max() == 4
    assert np.mean(train.x) == pytest.approx(train.mean[0], rel=1e-4)
    assert np.std(train.x) == pytest.approx(train.std[0], rel=1e-3)
    assert test.mean == train.mean  # test is normalised with the train statistics


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_default_augmentation_runs_through_batch_loader(name: str) -> None:
    ds = load_dataset(name, "test")
    loader = BatchLoader(ds, 64, shuffle=True, augment=DATASETS.get(name).augment, seed=1)
    x, y = next(iter(loader))
    assert x.shape == (64, *ds.input_shape) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.isfinite(x).all()


def test_bundled_files_match_manifest() -> None:
    manifest = json.loads((BUNDLED / "manifest.json").read_text(encoding="utf-8"))
    readme = (BUNDLED / "README.md").read_text(encoding="utf-8")
    assert "CC BY-SA 4.0" in readme and "Krizhevsky" in readme and "LeCun" in readme
    for entry in manifest.values():
        for rel, info in entry["files"].items():
            data = (BUNDLED / rel).read_bytes()
            assert len(data) == info["bytes"]
            assert hashlib.sha256(data).hexdigest() == info["sha256"]
            assert info["sha256"] in readme


def test_prepare_summarises_every_split() -> None:
    summary = prepare("mnist")
    assert summary["data_dir"] is None
    assert summary["splits"]["train"]["count"] == 10000 and summary["splits"]["test"]["shape"] == [2000, 1, 28, 28]
    assert sum(summary["splits"]["test"]["class_counts"].values()) == 2000
    json.dumps(summary)  # JSON-ready for the CLI


def test_unknown_dataset_and_split_and_option() -> None:
    with pytest.raises(ConfigError, match=r"unknown dataset 'cifar11'.*cifar10"):
        load_dataset("cifar11")
    with pytest.raises(ConfigError, match=r"split must be one of"):
        load_dataset("mnist", "validation")
    with pytest.raises(ConfigError, match=r"colour"):
        load_dataset("mnist", "test", colour="red")


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="full copies in ../shared/data are not present")
@pytest.mark.parametrize(("name", "count", "path_part"), [
    ("cifar10", 10000, "cifar10-jpg/test.zip"), ("mnist", 10000, "mnist/mnist.npz"),
    ("fsdd", 300, "fsdd/recordings.zip")])
def test_full_copies_from_shared_data_dir(name: str, count: int, path_part: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVICEFIT_DATA_DIR", str(SHARED_DATA))
    ds = load_dataset(name, "test")
    assert len(ds) == count and ds.source.endswith(path_part)
    assert np.bincount(ds.y, minlength=10).min() > 0
