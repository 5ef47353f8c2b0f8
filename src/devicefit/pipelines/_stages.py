"""The stage engine of `devicefit run`: registered stages, each with a fingerprint, run in recipe order.

A stage's fingerprint hashes the devicefit version, the stage's own slice of the recipe and the
identity (fingerprint and creation time) of the records of the stages it reads. A stage whose record
(`stages/<name>.json`) carries the same fingerprint is not recomputed; a changed config reruns that
stage and everything that reads it. Long stages keep their own resumable state inside
`stages/<name>/` (a killed run resumes where it was).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from devicefit import __version__
from devicefit.core import DataError, Registry, RunRecord, machine_info

from ._recipe import Recipe

__all__ = ["STAGES", "Stage", "StageContext", "run_stages", "stage"]


@dataclass
class StageContext:
    """What a running stage sees: the recipe, its own folder, the records of the stages before it,
    a log function (run log + terminal) and whether to draw progress bars."""

    recipe: Recipe
    run_dir: Path
    records: dict[str, RunRecord]
    log: Callable[[str], None]
    progress: bool = True
    stage_dir: Path = field(default_factory=Path)


class Stage:
    """One step of a recipe. Subclasses set `name`, `reads` (stages whose records they use; those
    present in the recipe feed the fingerprint), implement `config(recipe)` (the recipe slice that
    decides the result) and `run(ctx) -> (metrics, artefacts)`; artefact paths are relative to the
    run directory. `run` must write its files atomically and may resume from files in `ctx.stage_dir`."""

    name: ClassVar[str]
    reads: ClassVar[tuple[str, ...]] = ()

    def config(self, recipe: Recipe) -> dict[str, Any]:
        raise NotImplementedError

    def run(self, ctx: StageContext) -> tuple[dict[str, Any], dict[str, str]]:
        raise NotImplementedError


STAGES: Registry[type[Stage]] = Registry("stage")


def stage(cls: type[Stage]) -> type[Stage]:
    """Class decorator: register a stage under its `name`."""
    STAGES.register(cls.name)(cls)
    return cls


def fingerprint(name: str, config: dict[str, Any], upstream: dict[str, str]) -> str:
    body = json.dumps({"stage": name, "version": __version__, "config": config, "upstream": upstream},
                      sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def _cached(path: Path, fp: str) -> RunRecord | None:
    if not path.exists():
        return None
    try:
        record = RunRecord.load(path)
    except DataError:
        return None  # an unreadable record is recomputed, never trusted
    return record if record.config.get("fingerprint") == fp else None


def run_stages(recipe: Recipe, run_dir: Path, *, log: Callable[[str], None], progress: bool = True,
               logger: logging.Logger | None = None) -> dict[str, RunRecord]:
    """Run the recipe's stages in order, reusing every stage whose fingerprint is unchanged."""
    records: dict[str, RunRecord] = {}
    for name in recipe.stages:
        st = STAGES.get(name)()
        # an upstream stage is identified by its fingerprint and when it ran: a rerun (e.g. its record was
        # deleted) changes what this stage read, so this stage reruns too
        upstream = {r: f"{records[r].config['fingerprint']}@{records[r].created_at}" for r in st.reads if r in records}
        stage_config = st.config(recipe)
        fp = fingerprint(name, stage_config, upstream)
        path = run_dir / "stages" / f"{name}.json"
        if (hit := _cached(path, fp)) is not None:
            log(f"{name}: unchanged: reusing {path.relative_to(run_dir)}")
            records[name] = hit
            continue
        log(f"{name}: running")
        started = time.perf_counter()
        ctx = StageContext(recipe, run_dir, records, log, progress, run_dir / "stages" / name)
        ctx.stage_dir.mkdir(parents=True, exist_ok=True)
        metrics, artefacts = st.run(ctx)
        record = RunRecord(name, {"fingerprint": fp, "upstream": upstream, "stage_config": stage_config},
                           {**metrics, "stage_seconds": time.perf_counter() - started}, artefacts, machine_info())
        record.save(run_dir / "stages")
        records[name] = record
        log(f"{name}: done in {time.perf_counter() - started:.1f} s")
    return records
