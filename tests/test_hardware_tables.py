"""Measured NAS tables: the bundled slices and (when present) the full copies load with the documented
rows and columns; malformed tables raise DataError naming the file, column and row."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from devicefit.core import ConfigError, DataError
from devicefit.hardware._encoding import FBNET, NB201
from devicefit.hardware._tables import (
    bundled_tables_dir,
    load_accuracy_table,
    load_latency_table,
)

SHARED_DATA = Path(__file__).parents[1] / ".." / "shared" / "data"
HAVE_FULL = (SHARED_DATA / "nas-hw-benchmarks" / "nb201_latency_help.csv").is_file()
HEADER = "nb201_index,arch_str,op_codes,pixel2,gold_6226\n"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEVICEFIT_DATA_DIR", raising=False)


def test_bundled_nb201_slice() -> None:
    t = load_latency_table("nb201")
    assert t.family == "nb201" and len(t.specs) == 600 and t.index.dtype == np.int64
    assert t.source.startswith("bundled slice")
    assert len(t.latency_ms) == 25 and {"eyeriss", "fpga"} <= set(t.latency_ms)
    measured = t.measured_columns()
    assert len(measured) == 23 and "eyeriss" not in measured and "pixel2" in measured
    assert t.columns["pixel2"]["device"] == "Google Pixel 2"
    assert all(t.specs[i] == NB201.spec(t.specs[i]["ops"]) for i in range(5))
    spec = t.specs[7]
    assert t.row(spec) == 7 and t.latency(spec, "pixel2") == t.latency_ms["pixel2"][7]
    assert all((v > 0).all() and not v.flags.writeable for v in t.latency_ms.values())
    assert load_latency_table("nb201") is t  # cached


def test_bundled_fbnet_and_accuracy_slices() -> None:
    f = load_latency_table("fbnet")
    assert len(f.specs) == 400 and len(f.latency_ms) == 27 and len(f.measured_columns()) == 25
    assert f.specs[0].family == FBNET.family
    a = load_accuracy_table()
    nb = load_latency_table("nb201")
    assert set(a.specs) == set(nb.specs)
    assert set(a.accuracy) == {"cifar10_test_acc", "cifar100_test_acc", "imagenet16_120_test_acc"}
    assert 0 < a.value(a.specs[0]) <= 100


def test_row_of_absent_or_foreign_spec_names_it() -> None:
    t = load_latency_table("nb201")
    absent = next(NB201.from_code(f"{c:06d}") for c in range(100000)
                  if all(d in "01234" for d in f"{c:06d}") and NB201.from_code(f"{c:06d}") not in t)
    with pytest.raises(ConfigError, match="is not in table"):
        t.row(absent)
    with pytest.raises(ConfigError, match="fbnet"):
        t.row(load_latency_table("fbnet").specs[0])
    with pytest.raises(ConfigError, match="known"):
        t.latency(t.specs[0], "no_such_device")


@pytest.mark.skipif(not HAVE_FULL, reason="full nas-hw-benchmarks copy not present")
def test_full_tables_load() -> None:
    t = load_latency_table("nb201", SHARED_DATA)
    assert len(t.specs) == 15625 and sorted(t.index.tolist()) == list(range(15625))
    assert load_latency_table("fbnet", SHARED_DATA / "nas-hw-benchmarks").index.shape == (5000,)
    acc = load_accuracy_table("nb201", SHARED_DATA)
    assert max(acc.accuracy["cifar10_test_acc"]) == pytest.approx(94.37, abs=0.01)


def test_env_var_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, "0,a,000000,9,1.5\n1,b,000001,10,2.5\n")
    monkeypatch.setenv("DEVICEFIT_DATA_DIR", str(tmp_path))
    t = load_latency_table("nb201")
    assert len(t.specs) == 2 and t.source.endswith("nb201_latency_help.csv")
    assert t.columns == {"pixel2": {}, "gold_6226": {}}  # no columns.csv: no metadata, all measured
    assert t.measured_columns() == ["pixel2", "gold_6226"]


def test_data_dir_without_tables_names_places(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nb201_latency_help\.csv was not found"):
        load_latency_table("nb201", tmp_path)


@pytest.mark.parametrize(("rows", "header", "match"), [
    ("0,a,000000,9,1.5\n", "nb201_index,arch_str,pixel2\n", r"missing required column\(s\) op_codes"),
    ("0,a,000000,9,1.5\n0,b,000001,10,2.5\n", HEADER, r"'nb201_index' has duplicate index 0 \(rows 1 and 2\)"),
    ("0,a,000000,9,1.5\n1,b,000001,10,0\n", HEADER, r"column 'gold_6226' row 2: values must be finite and > 0"),
    ("0,a,000000,9,1.5\n1,b,000001,-3,2\n", HEADER, r"column 'pixel2' row 2"),
    ("0,a,000000,9,1.5\n1,b,000001,nan,2\n", HEADER, r"column 'pixel2' row 2"),
    ("0,a,000000,x,1.5\n", HEADER, r"column 'pixel2' row 1: expected a number"),
    ("0,a,000900,9,1.5\n", HEADER, r"column 'op_codes' row 1"),
    ("0,a,000000,9,1.5\n1,b,000000,9,1.5\n", HEADER, r"rows 1 and 2 hold the same architecture"),
])
def test_validation_errors_name_file_column_row(tmp_path: Path, rows: str, header: str, match: str) -> None:
    path = _write(tmp_path, rows, header)
    with pytest.raises(DataError, match=match) as info:
        load_latency_table("nb201", tmp_path)
    assert str(path) in str(info.value)


def test_gzip_table_in_subfolder(tmp_path: Path) -> None:
    sub = tmp_path / "nas-hw-benchmarks"
    sub.mkdir()
    _write(sub, "0,a,000000,9,1.5\n")
    assert load_latency_table("nb201", tmp_path).latency(NB201.from_code("000000"), "pixel2") == 9.0
    assert (bundled_tables_dir() / "nb201_latency_slice.csv.gz").read_bytes()[:2] == b"\x1f\x8b"
    with gzip.open(bundled_tables_dir() / "fbnet_latency_slice.csv.gz", "rt") as f:
        assert f.readline().startswith("arch_id,blocks,op_idx")


def _write(folder: Path, rows: str, header: str = HEADER) -> Path:
    path = folder / "nb201_latency_help.csv"
    path.write_text(header + rows, encoding="utf-8")
    return path
