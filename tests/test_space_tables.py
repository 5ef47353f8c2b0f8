"""Table lookups of the NB201/FBNet spaces against the CSV rows, and the latency-constrained oracle."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import pytest

from devicefit.core import BudgetError, ConfigError
from devicefit.hardware import FBNET, NB201
from devicefit.space import get_space

tables = pytest.importorskip("devicefit.hardware._tables", reason="the table loaders are not there yet")

FULL_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "nas-hw-benchmarks"
NB = get_space("nb201")
FB = get_space("fbnet")


@pytest.fixture(autouse=True)
def _bundled_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEVICEFIT_DATA_DIR", raising=False)


def _csv_rows(path: Path, n: int) -> list[dict[str, str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        return [row for _, row in zip(range(n), csv.DictReader(f), strict=False)]


def _slice(name: str) -> Path:
    return tables.bundled_tables_dir() / name


@pytest.mark.parametrize("data_dir", [None, FULL_DIR], ids=["bundled", "full"])
def test_nb201_lookups_match_the_csv_rows(data_dir: Path | None) -> None:
    if data_dir is not None and not data_dir.is_dir():
        pytest.skip(f"{data_dir} is absent")
    acc_file = data_dir / "nb201_accuracy_natsbench.csv" if data_dir else _slice("nb201_accuracy_slice.csv.gz")
    lat_file = data_dir / "nb201_latency_help.csv" if data_dir else _slice("nb201_latency_slice.csv.gz")
    for row in _csv_rows(acc_file, 5):
        spec = NB201.from_code(row["op_codes"])
        assert NB.accuracy(spec, data_dir=data_dir) == pytest.approx(float(row["cifar10_test_acc"]))
        assert NB.accuracy(spec, dataset="cifar100", data_dir=data_dir) == pytest.approx(
            float(row["cifar100_test_acc"]))
        assert NB.accuracy(spec, dataset="imagenet16_120", data_dir=data_dir) == pytest.approx(
            float(row["imagenet16_120_test_acc"]))
    for row in _csv_rows(lat_file, 5):
        spec = NB201.from_code(row["op_codes"])
        for device in ("pixel2", "gold_6226", "titan_rtx_1", "eyeriss"):
            assert NB.latency_ms(spec, device, data_dir=data_dir) == pytest.approx(float(row[device]))


def test_fbnet_latency_matches_the_csv_and_has_no_accuracy() -> None:
    for row in _csv_rows(_slice("fbnet_latency_slice.csv.gz"), 5):
        spec = FBNET.from_code(row["op_idx"])
        assert spec["ops"] == tuple(row["blocks"].split())
        assert FB.latency_ms(spec, "raspi4") == pytest.approx(float(row["raspi4"]))
    spec = FBNET.from_code(_csv_rows(_slice("fbnet_latency_slice.csv.gz"), 1)[0]["op_idx"])
    with pytest.raises(ConfigError, match="no accuracy table exists for fbnet"):
        FB.accuracy(spec)
    with pytest.raises(ConfigError, match="no accuracy table exists for fbnet"):
        FB.oracle("raspi4", 100.0)


def test_lookup_errors_name_the_argument() -> None:
    spec = NB.latency_table().specs[0]
    with pytest.raises(ConfigError, match=r"device must be one of .*'pixel2'.*got 'pixel9'"):
        NB.latency_ms(spec, "pixel9")
    with pytest.raises(ConfigError, match=r"dataset must be one of .*got 'mnist'"):
        NB.accuracy(spec, dataset="mnist")
    with pytest.raises(ConfigError, match="op 'conv' at e0_1"):
        NB.accuracy(spec.replace(ops=("conv", *spec["ops"][1:])))
    with pytest.raises(ConfigError, match="latency_limit_ms must be > 0, got -1"):
        NB.oracle("pixel2", -1)


@pytest.mark.parametrize(("device", "dataset"), [("pixel2", "cifar10"), ("gold_6226", "cifar100"),
                                                 ("titan_rtx_1", "imagenet16_120")])
def test_oracle_is_the_best_under_the_limit(device: str, dataset: str) -> None:
    lat_table, acc_table = NB.latency_table(), NB.accuracy_table()
    column = f"{dataset}_test_acc"
    lat = np.array([lat_table.latency(s, device) for s in lat_table.specs])
    acc = np.array([acc_table.value(s, column) for s in lat_table.specs])
    limit = float(np.median(lat))
    spec, best_acc, best_lat = NB.oracle(device, limit, dataset=dataset)
    assert NB.contains(spec) and best_lat <= limit
    assert best_acc == pytest.approx(acc[lat <= limit].max())
    assert best_acc == pytest.approx(NB.accuracy(spec, dataset=dataset))
    assert best_lat == pytest.approx(NB.latency_ms(spec, device))
    _, unconstrained_acc, _ = NB.oracle(device, float(lat.max()), dataset=dataset)
    assert unconstrained_acc == pytest.approx(acc.max()) and unconstrained_acc >= best_acc


def test_oracle_raises_when_nothing_fits() -> None:
    fastest = min(NB.latency_table().latency(s, "pixel2") for s in NB.latency_table().specs)
    with pytest.raises(BudgetError, match=r"latency_limit_ms must be >= .* on 'pixel2'"):
        NB.oracle("pixel2", fastest / 2)


def test_oracle_on_the_full_table_reaches_the_published_optimum() -> None:
    if not FULL_DIR.is_dir():
        pytest.skip(f"{FULL_DIR} is absent")
    spec, acc, _ = NB.oracle("pixel2", 1e9, data_dir=FULL_DIR)
    assert acc == pytest.approx(94.37, abs=0.01)  # NAS-Bench-201's best CIFAR-10 test accuracy
    assert NB.contains(spec)
