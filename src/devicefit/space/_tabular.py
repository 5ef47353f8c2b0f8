"""Table lookups for spaces with measured benchmarks: accuracy, latency and the constrained oracle.

The tables live in `devicefit.hardware`; their loaders cache parsed tables, so repeated lookups are cheap.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import numpy as np

from devicefit.core import ArchSpec, BudgetError, ConfigError, check_choice, check_positive
from devicefit.hardware import load_accuracy_table, load_latency_table

__all__ = ["ACCURACY_DATASETS", "TabularSpace"]

# dataset name -> accuracy column of `AccuracyTable` (percent, test split, 200 epochs)
ACCURACY_DATASETS = {
    "cifar10": "cifar10_test_acc",
    "cifar100": "cifar100_test_acc",
    "imagenet16_120": "imagenet16_120_test_acc",
}

DataDir = str | os.PathLike[str] | None


def _load_latency(family: str, data_dir: DataDir) -> Any:
    return load_latency_table(family, data_dir=data_dir)


def _load_accuracy(family: str, data_dir: DataDir) -> Any:
    return load_accuracy_table(family, data_dir=data_dir)


class TabularSpace:
    """Mixin for a `Space` whose architectures have measured tables (NAS-Bench-201, FBNet).

    Put it before the space class in the bases; it uses the space's `name` (the table family) and
    `validate(spec)`. `accuracy_family` is the family of the accuracy table, or None when the benchmark has
    latency tables only. Units: latency in ms, accuracy in percent. `data_dir` None reads $DEVICEFIT_DATA_DIR,
    else the slice bundled with devicefit.
    """

    name: ClassVar[str]
    accuracy_family: ClassVar[str | None] = None

    def latency_table(self, *, data_dir: DataDir = None) -> Any:
        """The `LatencyTable` of this family (cached)."""
        return _load_latency(self.name, data_dir)

    def accuracy_table(self, *, data_dir: DataDir = None) -> Any:
        """The `AccuracyTable` of this family (cached); ConfigError when the benchmark has none."""
        if self.accuracy_family is None:
            raise ConfigError(f"no accuracy table exists for {self.name} (its benchmark has latency tables only); "
                              f"use an nb201 space for accuracy lookups")
        return _load_accuracy(self.accuracy_family, data_dir)

    def devices(self, *, data_dir: DataDir = None) -> list[str]:
        """Latency columns (device settings) of the table, e.g. "pixel2", "gold_6226", "titan_rtx_1"."""
        return sorted(self.latency_table(data_dir=data_dir).latency_ms)

    def accuracy(self, spec: ArchSpec, *, dataset: str = "cifar10", data_dir: DataDir = None) -> float:
        """Measured test accuracy (percent) of `spec` on `dataset` (one of `ACCURACY_DATASETS`)."""
        check_choice("dataset", dataset, ACCURACY_DATASETS)
        table = self.accuracy_table(data_dir=data_dir)
        return float(table.value(self.validate(spec), ACCURACY_DATASETS[dataset]))

    def latency_ms(self, spec: ArchSpec, device: str, *, data_dir: DataDir = None) -> float:
        """Measured latency (ms) of `spec` on the device column `device` (see `devices()`)."""
        table = self.latency_table(data_dir=data_dir)
        check_choice("device", device, sorted(table.latency_ms))
        return float(table.latency(self.validate(spec), device))

    def oracle(
        self, device: str, latency_limit_ms: float, *, dataset: str = "cifar10", data_dir: DataDir = None
    ) -> tuple[ArchSpec, float, float]:
        """(spec, accuracy %, latency ms) of the most accurate architecture with latency <= `latency_limit_ms`.

        Exhaustive over the rows present in both tables (all 15,625 cells for the full NB201 tables, the
        bundled slice otherwise). Ties go to the lower latency, then the earlier table row. Raises
        `BudgetError` when no architecture meets the limit. This is the reference that searches are judged by.
        """
        check_positive("latency_limit_ms", latency_limit_ms)
        check_choice("dataset", dataset, ACCURACY_DATASETS)
        acc_table = self.accuracy_table(data_dir=data_dir)
        lat_table = self.latency_table(data_dir=data_dir)
        check_choice("device", device, sorted(lat_table.latency_ms))
        specs, acc, lat = _joined(lat_table, acc_table, device, ACCURACY_DATASETS[dataset])
        ok = np.isfinite(acc) & np.isfinite(lat) & (lat <= latency_limit_ms)
        if not ok.any():
            fastest = np.nanmin(lat) if np.isfinite(lat).any() else float("nan")
            raise BudgetError(f"latency_limit_ms must be >= {fastest:.4g} ms on {device!r} "
                              f"(the fastest {self.name} architecture in the table), got {latency_limit_ms}")
        rows = np.flatnonzero(ok)
        best = rows[np.lexsort((rows, lat[rows], -acc[rows]))[0]]  # last key is the primary key
        return specs[best], float(acc[best]), float(lat[best])


def _joined(lat_table: Any, acc_table: Any, device: str, column: str) -> tuple[list[ArchSpec], np.ndarray, np.ndarray]:
    """Specs in the latency table that the accuracy table also has, with their accuracy and latency arrays."""
    latencies = np.asarray(lat_table.latency_ms[device], dtype=np.float64)
    accuracies = np.asarray(acc_table.accuracy[column], dtype=np.float64)
    pairs = [(spec, acc_table.row(spec), i) for i, spec in enumerate(lat_table.specs) if spec in acc_table]
    specs = [p[0] for p in pairs]
    acc = accuracies[[p[1] for p in pairs]] if pairs else np.zeros(0)
    lat = latencies[[p[2] for p in pairs]] if pairs else np.zeros(0)
    return specs, acc, lat
