"""Records passed between stages: `Measurement` (a figure with unit, method, spread,
machine) and `RunRecord` (config + metrics + artefacts of one stage), both JSON."""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ._errors import DataError
from ._io import atomic_write_json, read_json

__all__ = ["RECORD_VERSION", "Measurement", "RunRecord"]

RECORD_VERSION = 1


@dataclass(frozen=True)
class Measurement:
    """One measured figure. `method` says how (runtime, warm-up, repeats, threads);
    `spread` holds p10/p90/cv where repeated; `machine` is `core.machine_info()`."""

    name: str
    value: float
    unit: str
    method: dict[str, Any] = field(default_factory=dict)
    spread: dict[str, float] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Measurement:
        return cls(**d)


@dataclass
class RunRecord:
    """What one stage did: its resolved config, metrics, artefact paths (relative to
    the run directory) and the machine. Saved as `<run_dir>/<stage>.json`."""

    stage: str
    config: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    artefacts: dict[str, str] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    version: int = RECORD_VERSION
    created_at: str = field(default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, run_dir: str | os.PathLike[str]) -> Path:
        return atomic_write_json(Path(run_dir) / f"{self.stage}.json", self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RunRecord:
        d = read_json(path)
        if not isinstance(d, dict) or d.get("version") != RECORD_VERSION:
            raise DataError(f"{path}: run record version {d.get('version') if isinstance(d, dict) else None!r} "
                            f"is not supported (expected {RECORD_VERSION}); rerun the stage into a new directory")
        try:
            return cls(**d)
        except TypeError as e:
            raise DataError(f"{path}: malformed run record ({e})") from None
