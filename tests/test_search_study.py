"""Persistent search state: optuna SQLite storage, resume after a crash, several workers on one study,
corrupt stores and mismatched studies."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

from devicefit.core import ArchSpec, ConfigError, DataError
from devicefit.search import Constraint, SearchConfig, history_of, open_study, run_search, storage_url
from devicefit.space import get_space

SPACE = get_space("nb201")
COST = {"none": 0.0, "skip_connect": 0.1, "nor_conv_1x1": 0.8, "nor_conv_3x3": 2.0, "avg_pool_3x3": 0.3}


def objective(spec: ArchSpec) -> dict[str, float]:
    lat = 1.0 + sum(COST[o] for o in spec["ops"])
    return {"accuracy": 80.0 + lat - 0.1 * spec["ops"].count("avg_pool_3x3"), "latency_ms": lat}


def config(n: int, method: str = "hsconas", seed: int = 0) -> SearchConfig:
    return SearchConfig(method=method, n_trials=n, seed=seed, constraints=(Constraint("latency_ms", 7.0),))


class Crash(RuntimeError):
    pass


def test_storage_url_forms(tmp_path: Path) -> None:
    assert storage_url(None) is None
    assert storage_url("postgresql://u@h/db") == "postgresql://u@h/db"
    url = storage_url(tmp_path / "sub" / "s.db")
    assert url == f"sqlite:///{(tmp_path / 'sub' / 's.db').resolve()}" and (tmp_path / "sub").is_dir()


def test_killed_search_resumes_where_it_stopped(tmp_path: Path) -> None:
    db = tmp_path / "study.db"
    full = run_search(SPACE, objective, config(12))  # in memory: same trials, no crash

    calls = {"n": 0}

    def dying(spec: ArchSpec) -> dict[str, float]:
        calls["n"] += 1
        if calls["n"] == 7:
            raise Crash("killed")
        return objective(spec)

    with pytest.raises(Crash):
        run_search(SPACE, dying, config(12), storage=db)
    kept = history_of(open_study(db, "devicefit-search", config(12).fingerprint(SPACE)))
    assert len(kept) == 6  # nothing evaluated is lost
    resumed = run_search(SPACE, objective, config(12), storage=db)
    assert len(resumed.history) == 12
    assert [h.spec for h in resumed.history[:6]] == [h.spec for h in kept]
    # the failed trial's spec stays on record and the resumed search continues like an uninterrupted one
    # (its first 6 trials are identical; after the crash the trial numbers shift by the failed one)
    assert [h.spec for h in resumed.history[:6]] == [h.spec for h in full.history[:6]]
    again = run_search(SPACE, objective, config(12), storage=db)  # finished: nothing more evaluated
    assert [h.number for h in again.history] == [h.number for h in resumed.history]


def test_a_larger_budget_extends_a_finished_study(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    run_search(SPACE, objective, config(4, "random"), storage=db, study_name="x")
    with pytest.raises(ConfigError, match="holds another search"):
        run_search(SPACE, objective, config(4, "evolution"), storage=db, study_name="x")
    res = run_search(SPACE, objective, SearchConfig(method="random", n_trials=6, seed=0,
                                                    constraints=(Constraint("latency_ms", 7.0),)),
                     storage=db, study_name="x")
    assert len(res.history) == 6


def test_corrupt_store_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not a database, it is text\n" * 10)
    with pytest.raises(DataError, match=r"bad\.db is not a SQLite database"):
        run_search(SPACE, objective, config(3), storage=bad)


def _worker(db: str, seed: int) -> None:
    run_search(SPACE, objective, SearchConfig(method="random", n_trials=10, seed=0,
                                              constraints=(Constraint("latency_ms", 7.0),)),
               storage=db, study_name="shared")


def test_two_processes_share_one_study(tmp_path: Path) -> None:
    db = str(tmp_path / "shared.db")
    run_search(SPACE, objective, config(1, "random"), storage=db, study_name="shared")  # create the study first
    ctx = mp.get_context("fork")  # spawn would re-import torch in each worker
    procs = [ctx.Process(target=_worker, args=(db, s)) for s in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    hist = history_of(open_study(db, "shared", config(1, "random").fingerprint(SPACE)))
    # both workers stop once the shared study holds 10 finished trials (a last one each may overshoot)
    assert 10 <= len(hist) <= 12
    assert len({h.number for h in hist}) == len(hist)
    assert hist[0].number == 0 and len(hist) > 1
