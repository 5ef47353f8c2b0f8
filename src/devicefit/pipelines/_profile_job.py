"""The profile job: sample architectures of a space, measure each on a host target, fit the latency
predictors and validate them on held-out architectures — the loop a user runs for their own device.

Run directory: config.json, log.txt, measurements.jsonl (one line per architecture and pass, appended
as it is measured, so a killed run resumes without re-measuring), reference.jsonl (the same reference
network re-measured throughout the run: the run's own repeatability figure), predictors/<kind>.json,
profile.json.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from devicefit.core import (
    ArchSpec,
    ConfigError,
    RunRecord,
    atomic_write_text,
    check_positive,
    check_range,
    machine_info,
    read_jsonl,
    to_dict,
)

from ._run_dir import claim_run_dir, open_run_log

__all__ = ["PROFILE_STAGE", "ProfileJobConfig", "latency_samples", "make_predictor", "run_profile_job"]

PROFILE_STAGE = "profile"
_MEASUREMENTS = "measurements.jsonl"
_REFERENCE = "reference.jsonl"


@dataclass(frozen=True)
class ProfileJobConfig:
    """Profile `n` architectures of `space` on `target` and fit `predictors`.

    Latency per architecture: the median over `sessions` fresh runtime sessions of the median of
    `repeats` timed runs after `warmup` (in up to `rounds` rounds until the coefficient of variation is
    ≤ `max_cv`, else flagged unstable); one session alone is not repeatable on a shared VM. With `passes` > 1
    every architecture is measured in that many sweeps over the whole sample (a slow spell of the
    machine then hits one sweep, not one architecture) and its figure is the median over passes.
    Every `reference_every` measurements the first sampled architecture is measured again (0: never);
    the spread of those figures is the run's repeatability, reported in profile.json. `test_fraction`
    of the measured architectures is held out to validate the predictors. `build` holds extra
    builder arguments of the space (e.g. `C`, `N` for nb201). `data_dir` locates the measured
    tables the `transfer` predictor uses as its prior.
    """

    space: str = "nb201"
    target: str = "host-ort"
    n: int = 300
    seed: int = 0
    repeats: int = 50
    warmup: int = 5
    rounds: int = 3
    sessions: int = 5
    passes: int = 1
    reference_every: int = 25
    threads: int | None = None
    max_cv: float = 0.05
    num_classes: int = 10
    input_shape: tuple[int, ...] = (3, 32, 32)
    build: dict[str, Any] = field(default_factory=dict)
    test_fraction: float = 0.3
    predictors: tuple[str, ...] = ("lut", "mlp", "gbdt", "transfer")
    data_dir: str | None = None
    run_dir: str | None = None

    def __post_init__(self) -> None:
        check_positive("n", self.n)
        check_positive("repeats", self.repeats)
        check_positive("rounds", self.rounds)
        check_positive("passes", self.passes)
        check_positive("sessions", self.sessions)
        if not isinstance(self.reference_every, int) or self.reference_every < 0:
            raise ConfigError(f"reference_every must be an int >= 0 (0: never), got {self.reference_every!r}")
        check_range("test_fraction", self.test_fraction, 0.0, 1.0)
        if self.n * (1 - self.test_fraction) < 10:
            raise ConfigError(f"n={self.n} with test_fraction={self.test_fraction} leaves fewer than 10 "
                              "architectures to fit predictors on; raise n")


def run_profile_job(cfg: ProfileJobConfig, *, progress: bool = True,
                    echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure, fit, validate; return the summary (also saved as `profile.json`)."""
    from devicefit import hardware as H
    from devicefit import space as S

    space = S.get_space(cfg.space)
    target = H.get_target(cfg.target)
    if target.kind != "host":
        raise ConfigError(f"target must be a host target that can be measured here (host-ort, host-torch); "
                          f"{target.name!r} is a {target.kind} target")
    run_dir = Path(cfg.run_dir or f"runs/profile-{cfg.space}-{cfg.target}-n{cfg.n}-s{cfg.seed}")
    claim_run_dir(run_dir, "profile", to_dict(cfg))
    logger = open_run_log(run_dir)

    def log(text: str) -> None:
        logger.info(text)
        if echo is not None:
            echo(text)

    specs = _sample_distinct(space, cfg.n, cfg.seed)
    rows = _measure_all(space, specs, cfg, run_dir, progress=progress, log=log)
    summary = _fit_and_validate(rows, cfg, run_dir, log)
    artefacts = {"measurements": _MEASUREMENTS, "reference": _REFERENCE, "log": "log.txt"}
    RunRecord(PROFILE_STAGE, to_dict(cfg), summary, artefacts, machine_info()).save(run_dir)
    return {**summary, "run_dir": str(run_dir)}


def _sample_distinct(space: Any, n: int, seed: int) -> list[ArchSpec]:
    """`n` distinct architectures drawn with a seeded generator (fails if the space is smaller)."""
    if n > space.size:
        raise ConfigError(f"n={n} is larger than the {space.name} space ({space.size} architectures)")
    rng = np.random.default_rng(seed)
    seen: dict[ArchSpec, None] = {}
    while len(seen) < n:
        seen.setdefault(space.sample(rng), None)
    return list(seen)


def _load_rows(path: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """Measurements already on disk, by (spec JSON, pass); a torn last line (killed mid-write) is dropped.
    Rows written before passes existed count as pass 0."""
    return {(_key(row["spec"]), int(row.get("pass", 0))): row for row in read_jsonl(path)}


def _key(spec_dict: dict[str, Any]) -> str:
    """The identity of a measured architecture in measurements.jsonl."""
    return json.dumps(spec_dict, sort_keys=True)


def _per_architecture(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per architecture (first-seen order): the median over its passes, with `pass_spread`
    (max/min - 1 of the pass figures; 0 for one pass)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(_key(r["spec"]), []).append(r)
    out = []
    for group in groups.values():
        lat = np.array([r["latency_ms"] for r in group])
        out.append({**group[0], "latency_ms": float(np.median(lat)), "passes": len(group),
                    "pass_spread": float(lat.max() / lat.min() - 1), "cv": float(np.median([r["cv"] for r in group])),
                    "stable": all(r["stable"] for r in group)})
    return out


def _drop_torn_tail(path: Path, rows: dict[Any, dict[str, Any]]) -> None:
    """Rewrite the file with only its whole lines when a kill left a partial last line, so that
    new lines are appended after a newline."""
    if path.exists() and path.stat().st_size and not path.read_bytes().endswith(b"\n"):
        atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows.values()))


def _measure_one(space: Any, spec: ArchSpec, cfg: ProfileJobConfig) -> dict[str, Any]:
    from devicefit import hardware as H

    model = space.build(spec, num_classes=cfg.num_classes, input_shape=tuple(cfg.input_shape), **cfg.build)
    with warnings.catch_warnings():  # an unstable figure is recorded per row and counted in the summary
        warnings.simplefilter("ignore", RuntimeWarning)
        res = H.measure_latency(model, cfg.target, input_shape=tuple(cfg.input_shape), repeats=cfg.repeats,
                                warmup=cfg.warmup, threads=cfg.threads, rounds=cfg.rounds, max_cv=cfg.max_cv,
                                sessions=cfg.sessions)
    return {"spec": spec.to_dict(), "latency_ms": res.median_ms, "p10_ms": res.p10_ms, "p90_ms": res.p90_ms,
            "cv": res.cv, "stable": res.stable, "method": res.measurement.method}


def _append(out: Any, row: dict[str, Any]) -> None:
    out.write(json.dumps(row, sort_keys=True) + "\n")
    out.flush()  # one whole line per figure: a kill loses at most the one in flight


def _measure_all(space: Any, specs: list[ArchSpec], cfg: ProfileJobConfig, run_dir: Path, *, progress: bool,
                 log: Callable[[str], None]) -> list[dict[str, Any]]:
    from rich.progress import Progress

    path, ref_path = run_dir / _MEASUREMENTS, run_dir / _REFERENCE
    done = _load_rows(path)
    _drop_torn_tail(path, done)
    _drop_torn_tail(ref_path, dict(enumerate(read_jsonl(ref_path))))
    todo = [(s, p) for p in range(cfg.passes) for s in specs if (_key(s.to_dict()), p) not in done]
    total = len(specs) * cfg.passes
    log(f"{total - len(todo)} of {total} figures ({len(specs)} architectures × {cfg.passes} pass(es)) already "
        f"measured; measuring {len(todo)} on {cfg.target}")
    with Progress(disable=not progress) as bar, path.open("a", encoding="utf-8") as out, \
            ref_path.open("a", encoding="utf-8") as ref_out:
        task = bar.add_task(f"measuring on {cfg.target}", total=len(todo))
        for i, (spec, p) in enumerate(todo):
            if cfg.reference_every and i % cfg.reference_every == 0:
                _append(ref_out, {**_measure_one(space, specs[0], cfg), "time": time.time(), "after": i})
            row = {**_measure_one(space, spec, cfg), "pass": p}
            _append(out, row)
            done[_key(row["spec"]), p] = row
            bar.advance(task)
        if todo and cfg.reference_every:
            _append(ref_out, {**_measure_one(space, specs[0], cfg), "time": time.time(), "after": len(todo)})
    rows = _per_architecture([done[_key(s.to_dict()), p] for p in range(cfg.passes) for s in specs])
    unstable = sum(not r["stable"] for r in rows)
    if unstable:
        log(f"warning: {unstable} of {len(rows)} figures have a spread above max_cv={cfg.max_cv} (the machine "
            f"was busy?); they are flagged in {_MEASUREMENTS} and counted in profile.json")
    return rows


def _repeatability(run_dir: Path, log: Callable[[str], None]) -> dict[str, Any] | None:
    """Spread of the reference network's figures over the run (None when it was never re-measured)."""
    lat = np.array([r["latency_ms"] for r in read_jsonl(run_dir / _REFERENCE)])
    if lat.size < 2:
        return None
    rep = {"n": int(lat.size), "median_ms": float(np.median(lat)), "cv": float(lat.std(ddof=1) / lat.mean()),
           "max_over_min": float(lat.max() / lat.min())}
    log(f"repeatability: the reference network measured {rep['n']} times over the run: cv {100 * rep['cv']:.1f}%, "
        f"max/min {rep['max_over_min']:.3f}" + (" (above 3%: the machine was not quiet)" if rep["cv"] > 0.03 else ""))
    return rep


def _fit_and_validate(rows: list[dict[str, Any]], cfg: ProfileJobConfig, run_dir: Path,
                      log: Callable[[str], None]) -> dict[str, Any]:
    from devicefit import hardware as H

    specs = [ArchSpec.from_dict(r["spec"]) for r in rows]
    y = np.array([r["latency_ms"] for r in rows], dtype=np.float64)
    cvs = np.array([r["cv"] for r in rows])
    order = np.random.default_rng(cfg.seed + 1).permutation(len(specs))
    n_test = max(1, round(cfg.test_fraction * len(specs)))
    test, train = order[:n_test], order[n_test:]
    results: dict[str, Any] = {}
    for kind in cfg.predictors:
        started = time.perf_counter()
        predictor = make_predictor(kind, cfg.space, data_dir=cfg.data_dir)
        predictor.fit([specs[i] for i in train], y[train])
        pred = predictor.predict([specs[i] for i in test])
        metrics = H.evaluate_predictions(y[test], pred)
        predictor.save(run_dir / "predictors" / f"{kind}.json")
        results[kind] = {**metrics, "fit_seconds": time.perf_counter() - started}
        log(f"{kind:9s} within ±10%: {100 * metrics['within_10']:.1f}%  Spearman {metrics['spearman']:.3f}  "
            f"MAPE {100 * metrics['mape']:.1f}%")
    return {
        "n_measured": len(rows), "n_train": len(train), "n_test": len(test),
        "latency_ms": {"min": float(y.min()), "median": float(np.median(y)), "max": float(y.max())},
        "measurement_cv": {"median": float(np.median(cvs)), "max": float(cvs.max()),
                           "share_stable": float(np.mean([r["stable"] for r in rows]))},
        "pass_spread": {"median": float(np.median([r["pass_spread"] for r in rows])),
                        "p90": float(np.percentile([r["pass_spread"] for r in rows], 90))} if cfg.passes > 1 else None,
        "repeatability": _repeatability(run_dir, log),
        "predictors": results,
    }


def make_predictor(kind: str, family: str, *, data_dir: str | None = None, exclude: tuple[str, ...] = ()) -> Any:
    """A fresh predictor of `kind`; `transfer` gets the measured `family` table as its prior
    (without the `exclude` columns, e.g. the column being predicted)."""
    from devicefit import hardware as H

    cls = H.PREDICTORS.get(kind)
    if cls is H.TransferPredictor:
        return cls(source=H.load_latency_table(family, data_dir), exclude=exclude)
    return cls()


def latency_samples(*, target: str | None = None, measurements: str | None = None,
                    data_dir: str | None = None) -> tuple[list[ArchSpec], np.ndarray, str, str]:
    """(specs, latencies_ms, family, description) from a table target's column or from a profile run
    (its directory or its measurements.jsonl). Exactly one of `target`/`measurements` must be given."""
    from devicefit import hardware as H

    if (target is None) == (measurements is None):
        raise ConfigError("give exactly one of a table target (e.g. nb201-pixel2) or a profile run's measurements")
    if target is not None:
        t = H.get_target(target)
        if t.kind != "table" or t.space is None or t.column is None:
            raise ConfigError(f"target {t.name!r} is not a table device; use a profile run for {t.kind} targets")
        table = H.load_latency_table(t.space, data_dir)
        return list(table.specs), np.asarray(table.latency_ms[t.column]), t.space, f"{t.name} ({table.source})"
    path = Path(measurements)  # type: ignore[arg-type]
    path = path / _MEASUREMENTS if path.is_dir() else path
    rows = _per_architecture(list(_load_rows(path).values()))
    if not rows:
        raise ConfigError(f"{path}: no measurements found (run `devicefit profile` first)")
    specs = [ArchSpec.from_dict(r["spec"]) for r in rows]
    return specs, np.array([r["latency_ms"] for r in rows]), specs[0].family, str(path)
