"""The search job: wires a table-backed space and a table target into `devicefit.search` (objective =
accuracy lookup, constraint = the target's measured latency) and writes the JSON record of every candidate."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from devicefit.core import ArchSpec, ConfigError, DataError, atomic_write_json, check_positive, machine_info
from devicefit.hardware import get_target
from devicefit.search import Constraint, Evaluated, SearchConfig, SearchResult, run_search
from devicefit.space import ACCURACY_DATASETS, TabularSpace, get_space

__all__ = ["SearchJobConfig", "TabularProblem", "device_column", "run_search_job", "tabular_problem"]


@dataclass(frozen=True)
class TabularProblem:
    """Lookups for one (space, device column, dataset): `objective(spec)` -> {"accuracy" %, "latency_ms"},
    `estimate(spec)` -> {"latency_ms"}, the smallest latency in the table (`min_latency_ms`) and `oracle(limit)`
    -> (spec, accuracy, latency) of the best architecture within a limit."""

    space: Any
    device: str
    dataset: str
    accuracy: Mapping[ArchSpec, float] = field(repr=False)
    latency_ms: Mapping[ArchSpec, float] = field(repr=False)
    data_dir: str | None = None

    @property
    def min_latency_ms(self) -> float:
        return float(min(self.latency_ms[s] for s in self.accuracy))

    def objective(self, spec: ArchSpec) -> dict[str, float]:
        """Accuracy and latency lookups; DataError for an architecture the tables do not hold."""
        if spec not in self.accuracy:
            raise DataError(f"{spec} is not in the {self.space.name} tables used here (a bundled slice holds "
                            f"{len(self.accuracy)} rows; give --data-dir with the full tables)")
        return {"accuracy": self.accuracy[spec], "latency_ms": self.latency_ms[spec]}

    def estimate(self, spec: ArchSpec) -> dict[str, float]:
        """The measured latency, or inf for rows the tables lack (so the screen keeps the search inside them)."""
        return {"latency_ms": self.latency_ms[spec] if spec in self.accuracy else math.inf}

    def oracle(self, limit_ms: float) -> tuple[ArchSpec, float, float]:
        return self.space.oracle(self.device, limit_ms, dataset=self.dataset,  # type: ignore[no-any-return]
                                 data_dir=self.data_dir)


def tabular_problem(space_name: str, device: str, *, dataset: str = "cifar10",
                    data_dir: str | os.PathLike[str] | None = None) -> TabularProblem:
    """The lookup problem of a table space on a latency column (restricted to rows with an accuracy)."""
    space = get_space(space_name)
    if not isinstance(space, TabularSpace):
        raise ConfigError(f"space {space_name!r} has no measured tables; tabular search needs nb201")
    dd = None if data_dir is None else os.fspath(data_dir)
    acc_table = space.accuracy_table(data_dir=dd)
    lat_table = space.latency_table(data_dir=dd)
    if device not in lat_table.latency_ms:
        raise ConfigError(f"device column {device!r} is not in the {space_name} latency table; known: "
                          f"{', '.join(sorted(lat_table.latency_ms))}")
    if dataset not in ACCURACY_DATASETS:
        raise ConfigError(f"dataset must be one of {', '.join(ACCURACY_DATASETS)}, got {dataset!r}")
    acc_col = acc_table.column(ACCURACY_DATASETS[dataset])
    lat_col = lat_table.column(device)
    latency = {s: float(lat_col[i]) for i, s in enumerate(lat_table.specs)}
    accuracy = {s: float(acc_col[acc_table.row(s)]) for s in lat_table.specs if s in acc_table}
    return TabularProblem(space, device, dataset, accuracy, latency, dd)


@dataclass(frozen=True)
class SearchJobConfig:
    """`devicefit search` on a table space: `target` is a table target (e.g. "nb201-pixel2") or a bare device
    column ("pixel2"); `latency_ms` the budget; the search is stored in `storage` (SQLite path or URL; None =
    `<out>.db` beside the record) under `study_name` (default derived from the settings)."""

    space: str = "nb201"
    target: str = "nb201-pixel2"
    latency_ms: float = 0.0
    method: str = "hsconas"
    n_trials: int = 100
    seed: int = 0
    dataset: str = "cifar10"
    data_dir: str | None = None
    storage: str | None = None
    study_name: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_positive("latency_ms", self.latency_ms)


def device_column(space_name: str, target: str) -> str:
    """The latency column that `target` names; ConfigError when the target belongs to another space."""
    if "-" in target:  # a registered target name; bare table columns have no dash
        t = get_target(target)
        if t.kind != "table":
            raise ConfigError(f"target {target!r} is a {t.kind} target; search on {space_name} needs a table "
                              f"target of that space (devicefit targets ls --kind table)")
        if t.space != space_name:
            raise ConfigError(f"target {target!r} measures the {t.space} space, not {space_name!r}")
        return str(t.column)
    return target


def run_search_job(cfg: SearchJobConfig, out: str | os.PathLike[str],
                   on_trial: Callable[[Evaluated], None] | None = None) -> tuple[SearchResult, dict[str, Any]]:
    """Run (or resume) the search and write its JSON record to `out` (atomically): settings, the oracle
    under the budget, the best feasible candidate, the Pareto front and every evaluated candidate."""
    column = device_column(cfg.space, cfg.target)
    problem = tabular_problem(cfg.space, column, dataset=cfg.dataset, data_dir=cfg.data_dir)
    constraint = Constraint("latency_ms", cfg.latency_ms, lower_bound=problem.min_latency_ms)
    search_cfg = SearchConfig(method=cfg.method, n_trials=cfg.n_trials, seed=cfg.seed,
                              constraints=(constraint,), options=cfg.options)
    out = Path(out)
    storage = cfg.storage if cfg.storage is not None else out.with_suffix(".db")
    name = cfg.study_name or f"{cfg.space}-{column}-{cfg.method}-{cfg.latency_ms:g}ms-s{cfg.seed}"
    result = run_search(problem.space, problem.objective, search_cfg, estimate=problem.estimate,
                        storage=storage, study_name=name, on_trial=on_trial)
    o_spec, o_acc, o_lat = problem.oracle(cfg.latency_ms)
    record = {"space": cfg.space, "target": cfg.target, "device_column": column, "dataset": cfg.dataset,
              "latency_ms": cfg.latency_ms, "storage": str(storage), "study_name": name,
              "oracle": {"spec": o_spec.to_dict(), "accuracy": o_acc, "latency_ms": o_lat},
              "gap_to_oracle": None if result.best is None else o_acc - result.best.metrics["accuracy"],
              "machine": machine_info(), **result.to_dict()}
    atomic_write_json(out, _finite(record))
    return result, record


def _finite(obj: Any) -> Any:
    """JSON has no inf/NaN: turn them into None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.floating):
        return _finite(float(obj))
    return obj
