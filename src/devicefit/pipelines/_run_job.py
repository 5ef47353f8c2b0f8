"""`devicefit run`: a recipe from a dataset and device budgets to a verified model and a report.

The run directory holds config.json (the recipe and the devicefit version), log.txt, stages/<name>.json
(one record per stage, with its fingerprint), stages/<name>/ (each stage's artefacts and resumable
state), report.html and report.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devicefit import __version__
from devicefit.core import ConfigError, DataError, atomic_write_json, read_json, to_dict

from . import _stage_compress, _stage_deploy, _stage_search, _stage_verify, _stage_zoo  # noqa: F401  (registers)
from ._recipe import Recipe
from ._run_dir import open_run_log
from ._stages import STAGES, Stage, StageContext, run_stages, stage

__all__ = ["STAGES", "ReportStage", "run_recipe"]


@stage
class ReportStage(Stage):
    name = "report"
    reads = ("zoo", "search", "compress", "deploy", "verify")

    def config(self, recipe: Recipe) -> dict[str, Any]:
        return {"name": recipe.name}

    def run(self, ctx: StageContext) -> tuple[dict[str, Any], dict[str, str]]:
        from devicefit.reports import write_run_report

        paths = write_run_report(ctx.run_dir)
        return {}, {k: str(Path(v).relative_to(ctx.run_dir)) for k, v in paths.items()}


def _claim(run_dir: Path, recipe: Recipe) -> None:
    """A run directory belongs to `devicefit run` of this version; a changed recipe is allowed (its
    changed stages rerun) but another kind of job or another version is refused."""
    head = run_dir / "config.json"
    if head.exists():
        try:
            old = read_json(head)
        except DataError as e:
            raise ConfigError(f"run directory {run_dir} has an unreadable config.json ({e}); choose another") from None
        if old.get("kind") != "run":
            raise ConfigError(f"run directory {run_dir} holds a {old.get('kind')!r} job, not a `devicefit run`; "
                              "choose another run_dir")
        if old.get("devicefit_version") != __version__:
            raise ConfigError(f"run directory {run_dir} was written by devicefit {old.get('devicefit_version')}, "
                              f"this is {__version__}; choose another run_dir (records are not compatible)")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(head, {"kind": "run", "devicefit_version": __version__, "config": to_dict(recipe)})


def run_recipe(recipe: Recipe, *, progress: bool = True, echo: Callable[[str], None] | None = None,
               run_dir: str | Path | None = None) -> dict[str, Any]:
    """Run every stage of `recipe` (unchanged ones are reused) and return the verdict summary."""
    from devicefit import data as D

    # $DEVICEFIT_DATA_DIR becomes part of the recipe: every stage's fingerprint then says which copy of
    # the data it read, so switching copies reruns the stages instead of mixing results
    if recipe.data.data_dir is None and (from_env := D.resolve_data_dir(None)) is not None:
        recipe = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, data_dir=str(from_env)))
    out = Path(run_dir) if run_dir is not None else recipe.default_run_dir()
    _claim(out, recipe)
    logger = open_run_log(out)

    def log(text: str) -> None:
        logger.info(text)
        if echo is not None:
            echo(text)

    records = run_stages(recipe, out, log=log, progress=progress)
    summary: dict[str, Any] = {"run_dir": str(out), "stages": list(records)}
    if "verify" in records:
        v = records["verify"].metrics
        summary |= {"all_met": v["all_met"], "budgets": v["budgets"], "test_accuracy": v["final"]["test_accuracy"],
                    "final": v["final"]}
    if "search" in records:
        m = records["search"].metrics
        summary["search"] = {"kept": m["selected"], "comparison": m["comparison"],
                             "searched_spec": m["retrain"]["spec"]}
    if "report" in records:
        summary["report"] = str(out / records["report"].artefacts["html"])
    return summary
