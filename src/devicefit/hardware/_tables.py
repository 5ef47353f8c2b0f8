"""Measured NAS tables (nas-hw-benchmarks): latency per device column and NB201 accuracy, read from a
data dir or from the bundled slice, validated once and cached in memory by resolved path.
"""

from __future__ import annotations

import csv
import functools
import gzip
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from devicefit.core import ArchSpec, ConfigError, DataError, Registry
from devicefit.data import DATA_DIR_ENV, resolve_data_dir

from ._encoding import CellEncoding, get_encoding

__all__ = [
    "TABLE_FORMATS",
    "AccuracyTable",
    "LatencyTable",
    "TableFormat",
    "bundled_tables_dir",
    "load_accuracy_table",
    "load_latency_table",
]

SUBDIR = "nas-hw-benchmarks"
COLUMNS_FILE = "columns.csv"
_BUNDLED = Path(__file__).resolve().parent / "tables"
_COLUMN_META_KEYS = ("device", "batch_size", "kind", "unit", "note", "source")


@dataclass(frozen=True)
class TableFormat:
    """How one table file is laid out: its name, index and op-code columns, and non-value columns."""

    family: str
    file: str
    index_col: str
    code_col: str
    meta_cols: tuple[str, ...]
    slice_file: str

    def value_columns(self, header: Sequence[str]) -> list[str]:
        return [c for c in header if c not in self.meta_cols]


TABLE_FORMATS: Registry[TableFormat] = Registry("table format")
TABLE_FORMATS.add("latency:nb201", TableFormat("nb201", "nb201_latency_help.csv", "nb201_index", "op_codes",
                                               ("nb201_index", "arch_str", "op_codes"), "nb201_latency_slice.csv.gz"))
TABLE_FORMATS.add("latency:fbnet", TableFormat("fbnet", "fbnet_latency_help.csv", "arch_id", "op_idx",
                                               ("arch_id", "blocks", "op_idx"), "fbnet_latency_slice.csv.gz"))
TABLE_FORMATS.add("accuracy:nb201", TableFormat("nb201", "nb201_accuracy_natsbench.csv", "nb201_index", "op_codes",
                                                ("nb201_index", "arch_str", "op_codes"),
                                                "nb201_accuracy_slice.csv.gz"))


def bundled_tables_dir() -> Path:
    """Folder of the table slices shipped inside the package."""
    return _BUNDLED


# --------------------------------------------------------------------------------------------- records


class _Rows:
    """Shared row lookup of the two table records: spec → row, with errors naming the spec."""

    family: str
    specs: tuple[ArchSpec, ...]
    source: str
    _rows: dict[ArchSpec, int]

    @property
    def encoding(self) -> CellEncoding:
        return get_encoding(self.family)

    def __len__(self) -> int:
        return len(self.specs)

    def row(self, spec: ArchSpec) -> int:
        """Row of `spec`; raises ConfigError naming the spec (and the family) when it is absent."""
        if not isinstance(spec, ArchSpec) or spec.family != self.family:
            got = spec.family if isinstance(spec, ArchSpec) else type(spec).__name__
            raise ConfigError(f"table {self.source!r} holds {self.family!r} specs, got {got!r}")
        try:
            return self._rows[spec]
        except KeyError:
            raise ConfigError(f"{spec} is not in table {self.source!r} ({len(self.specs)} rows)") from None

    def rows(self, specs: Sequence[ArchSpec]) -> np.ndarray:
        """(N,) int64 rows of `specs` (each must be present)."""
        return np.array([self.row(s) for s in specs], dtype=np.int64)

    def __contains__(self, spec: object) -> bool:
        return spec in self._rows

    def __post_init__(self) -> None:
        if not self._rows:  # built by hand: index the specs
            object.__setattr__(self, "_rows", {s: i for i, s in enumerate(self.specs)})


def _column(values: dict[str, np.ndarray], name: str, source: str, what: str) -> np.ndarray:
    try:
        return values[name]
    except KeyError:
        raise ConfigError(f"{what} column {name!r} is not in table {source!r}; known: "
                          f"{', '.join(sorted(values))}") from None


@dataclass(frozen=True, eq=False)
class LatencyTable(_Rows):
    """Measured latencies (ms) of `specs` (canonical, one per row) on every device column.

    Arrays are read-only (tables are cached and shared). `columns` holds each column's metadata
    from columns.csv (device, batch_size, kind, unit, note); `kind` "estimated" marks simulators.
    """

    family: str
    specs: tuple[ArchSpec, ...]
    index: np.ndarray
    latency_ms: dict[str, np.ndarray]
    columns: dict[str, dict[str, str]]
    source: str
    _rows: dict[ArchSpec, int] = field(repr=False, default_factory=dict)

    def column(self, column: str) -> np.ndarray:
        """(N,) latencies of `column` in ms; ConfigError naming the known columns on a miss."""
        return _column(self.latency_ms, column, self.source, "latency")

    def latency(self, spec: ArchSpec, column: str) -> float:
        return float(self.column(column)[self.row(spec)])

    def measured_columns(self) -> list[str]:
        """Device columns that were measured (excludes the estimated/simulated eyeriss and fpga)."""
        return [c for c in self.latency_ms if not self.columns.get(c, {}).get("kind", "").startswith("estimated")]

    @classmethod
    def from_arrays(cls, family: str, specs: Sequence[ArchSpec], latency_ms: dict[str, Any],
                    index: Any = None, columns: dict[str, dict[str, str]] | None = None,
                    source: str = "in-memory table") -> LatencyTable:
        """A table from in-memory arrays (tests, simulated devices), validated like a file."""
        enc = get_encoding(family)
        specs = tuple(enc.spec(enc.ops_of(s)) for s in specs)
        rows = {s: i for i, s in enumerate(specs)}
        if len(rows) != len(specs):
            raise DataError(f"{source}: specs hold duplicate architectures")
        index = np.arange(len(specs)) if index is None else np.asarray(index, dtype=np.int64)
        if len(np.unique(index)) != len(specs):
            raise DataError(f"{source}: index must have {len(specs)} unique values")
        values = {c: _parse_values(Path(source), c, [str(x) for x in np.asarray(v, dtype=np.float64)], True)
                  for c, v in latency_ms.items()}
        bad = [c for c, v in values.items() if len(v) != len(specs)]
        if bad:
            raise DataError(f"{source}: column(s) {bad} do not have {len(specs)} values")
        meta = {c: (columns or {}).get(c, {}) for c in values}
        return cls(family, specs, _frozen(index), values, meta, source, rows)

    def take(self, rows: Sequence[int] | np.ndarray) -> LatencyTable:
        """A new table of the given rows (for train/held-out splits)."""
        rows = np.asarray(rows, dtype=np.int64)
        specs = tuple(self.specs[i] for i in rows)
        return LatencyTable(self.family, specs, _frozen(self.index[rows]),
                            {c: _frozen(v[rows]) for c, v in self.latency_ms.items()}, self.columns,
                            f"{self.source} [{len(rows)} rows]", {s: i for i, s in enumerate(specs)})


@dataclass(frozen=True, eq=False)
class AccuracyTable(_Rows):
    """Test accuracy (percent) of `specs` per column, e.g. "cifar10_test_acc"."""

    family: str
    specs: tuple[ArchSpec, ...]
    index: np.ndarray
    accuracy: dict[str, np.ndarray]
    source: str
    _rows: dict[ArchSpec, int] = field(repr=False, default_factory=dict)

    def column(self, column: str) -> np.ndarray:
        return _column(self.accuracy, column, self.source, "accuracy")

    def value(self, spec: ArchSpec, column: str = "cifar10_test_acc") -> float:
        return float(self.column(column)[self.row(spec)])


# --------------------------------------------------------------------------------------------- loading


def load_latency_table(family: str, data_dir: str | os.PathLike[str] | None = None) -> LatencyTable:
    """The latency table of `family` ("nb201" | "fbnet").

    Read from `data_dir` (a folder holding the CSVs or a `nas-hw-benchmarks/` sub-folder), else from
    `$DEVICEFIT_DATA_DIR` (same), else from the bundled slice. Raises DataError naming the file, column
    and first bad row when the table is malformed. Parsed tables are cached by resolved path.
    """
    fmt = TABLE_FORMATS.get(f"latency:{family}")
    path, columns_path, bundled = _find(fmt, data_dir)
    return _parse_latency(fmt, path, columns_path, bundled, _mtime(path), _mtime(columns_path))


def load_accuracy_table(family: str = "nb201", data_dir: str | os.PathLike[str] | None = None) -> AccuracyTable:
    """The accuracy table of `family` (only "nb201" exists); path resolution as `load_latency_table`."""
    fmt = TABLE_FORMATS.get(f"accuracy:{family}")
    path, _, bundled = _find(fmt, data_dir)
    return _parse_accuracy(fmt, path, bundled, _mtime(path))


def _find(fmt: TableFormat, data_dir: str | os.PathLike[str] | None) -> tuple[Path, Path | None, bool]:
    """(table file, columns.csv or None, whether bundled) for `fmt`, following the data-dir rules."""
    root = resolve_data_dir(data_dir)
    if root is None:
        path = _BUNDLED / fmt.slice_file
        if not path.is_file():
            raise DataError(f"bundled table slice {path} is missing; reinstall devicefit or pass data_dir")
        return path, _BUNDLED / COLUMNS_FILE, True
    tried = [root / SUBDIR, root]
    for folder in tried:
        if (folder / fmt.file).is_file():
            cols = folder / COLUMNS_FILE
            return (folder / fmt.file).resolve(), cols.resolve() if cols.is_file() else None, False
    origin = "data_dir" if data_dir is not None else f"${DATA_DIR_ENV}"
    looked = ", ".join(str(p) for p in tried)
    raise DataError(f"{fmt.file} was not found under {origin} {str(root)!r} (looked in {looked}); copy the "
                    f"nas-hw-benchmarks CSVs there, or unset {origin} to use the bundled slice")


def _mtime(path: Path | None) -> int:
    """Part of the cache key, so an edited file is parsed again."""
    return path.stat().st_mtime_ns if path is not None else 0


@functools.lru_cache(maxsize=16)
def _parse_latency(fmt: TableFormat, path: Path, columns_path: Path | None, bundled: bool, *_mtimes: int
                   ) -> LatencyTable:
    header, rows = _read_csv(path)
    specs, index, values = _parse_rows(fmt, path, header, rows)
    meta = _read_column_meta(columns_path, fmt.file)
    columns = {c: meta.get(c, {}) for c in values}
    source = f"bundled slice {path.name} ({len(specs)} rows)" if bundled else str(path)
    return LatencyTable(fmt.family, specs, index, values, columns, source, {s: i for i, s in enumerate(specs)})


@functools.lru_cache(maxsize=4)
def _parse_accuracy(fmt: TableFormat, path: Path, bundled: bool, *_mtimes: int) -> AccuracyTable:
    header, rows = _read_csv(path)
    specs, index, values = _parse_rows(fmt, path, header, rows, positive=False)
    source = f"bundled slice {path.name} ({len(specs)} rows)" if bundled else str(path)
    return AccuracyTable(fmt.family, specs, index, values, source, {s: i for i, s in enumerate(specs)})


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            rows = [r for r in reader if r]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot read table ({e})") from None
    if not header:
        raise DataError(f"{path}: empty file, expected a CSV header")
    return [h.strip() for h in header], rows


def _parse_rows(fmt: TableFormat, path: Path, header: list[str], rows: list[list[str]], positive: bool = True
                ) -> tuple[tuple[ArchSpec, ...], np.ndarray, dict[str, np.ndarray]]:
    """Validate and convert the rows: specs, (N,) int64 index, value column → (N,) float64 (read-only)."""
    _check_header(fmt, path, header)
    if not rows:
        raise DataError(f"{path}: no data rows")
    for n, r in enumerate(rows):
        if len(r) != len(header):
            raise DataError(f"{path}: row {n + 1} has {len(r)} fields, header has {len(header)}")
    cols = {name: [r[j] for r in rows] for j, name in enumerate(header)}
    index = _parse_index(path, fmt.index_col, cols[fmt.index_col])
    specs = _parse_specs(path, fmt, cols[fmt.code_col])
    values = {c: _parse_values(path, c, cols[c], positive) for c in fmt.value_columns(header)}
    return specs, _frozen(index), values


def _check_header(fmt: TableFormat, path: Path, header: list[str]) -> None:
    missing = [c for c in (fmt.index_col, fmt.code_col) if c not in header]
    if missing:
        raise DataError(f"{path}: missing required column(s) {', '.join(missing)}; got {', '.join(header)}")
    dup = sorted({c for c in header if header.count(c) > 1})
    if dup:
        raise DataError(f"{path}: duplicate column name(s) {', '.join(dup)}")
    if not fmt.value_columns(header):
        raise DataError(f"{path}: no value columns besides {', '.join(fmt.meta_cols)}")


def _parse_index(path: Path, name: str, raw: list[str]) -> np.ndarray:
    try:
        index = np.array([int(v) for v in raw], dtype=np.int64)
    except ValueError:
        bad = next(n for n, v in enumerate(raw) if not v.strip().lstrip("-").isdigit())
        raise DataError(f"{path}: column {name!r} row {bad + 1}: expected an integer, got {raw[bad]!r}") from None
    uniq, counts = np.unique(index, return_counts=True)
    if len(uniq) != len(index):
        dup = int(uniq[counts > 1][0])
        rows = np.flatnonzero(index == dup)[:2] + 1
        raise DataError(f"{path}: column {name!r} has duplicate index {dup} (rows {rows[0]} and {rows[1]})")
    return index


def _parse_specs(path: Path, fmt: TableFormat, raw: list[str]) -> tuple[ArchSpec, ...]:
    enc = get_encoding(fmt.family)
    specs: list[ArchSpec] = []
    seen: dict[ArchSpec, int] = {}
    for n, code in enumerate(raw):
        try:
            spec = enc.from_code(code.strip())
        except ConfigError as e:
            raise DataError(f"{path}: column {fmt.code_col!r} row {n + 1}: {e}") from None
        if spec in seen:
            raise DataError(f"{path}: column {fmt.code_col!r} rows {seen[spec] + 1} and {n + 1} hold the same "
                            f"architecture {code!r}")
        seen[spec] = n
        specs.append(spec)
    return tuple(specs)


def _parse_values(path: Path, name: str, raw: list[str], positive: bool) -> np.ndarray:
    try:
        values = np.array(raw, dtype=np.float64)
    except ValueError:
        bad = next(n for n, v in enumerate(raw) if not _is_float(v))
        raise DataError(f"{path}: column {name!r} row {bad + 1}: expected a number, got {raw[bad]!r}") from None
    ok = np.isfinite(values) & (values > 0) if positive else np.isfinite(values)
    if not ok.all():
        bad = int(np.flatnonzero(~ok)[0])
        need = "finite and > 0 (ms)" if positive else "finite"
        raise DataError(f"{path}: column {name!r} row {bad + 1}: values must be {need}, got {raw[bad]!r}")
    return _frozen(values)


def _is_float(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def _read_column_meta(path: Path | None, file: str) -> dict[str, dict[str, str]]:
    """columns.csv rows of `file`: column → metadata (empty when the dictionary is absent)."""
    if path is None:
        return {}
    header, rows = _read_csv(path)
    if "file" not in header or "column" not in header:
        raise DataError(f"{path}: missing required column(s) file, column")
    out: dict[str, dict[str, str]] = {}
    for r in rows:
        rec = dict(zip(header, r, strict=False))
        if rec["file"] == file:
            out[rec["column"]] = {k: rec.get(k, "") for k in _COLUMN_META_KEYS}
    return out


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a

