"""The `Strategy` contract over every registered search method, on a synthetic NB201 objective whose
constrained optimum is known by enumeration (no tables needed)."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest

from devicefit.core import ArchSpec, BudgetError, ConfigError
from devicefit.search import (
    STRATEGIES,
    ConstrainedEvolution,
    Constraint,
    Evaluated,
    SearchConfig,
    SearchContext,
    list_strategies,
    pareto_front,
    positional,
    run_search,
)
from devicefit.space import get_space

SPACE = get_space("nb201")
GAIN = {"none": 0.0, "skip_connect": 0.6, "nor_conv_1x1": 1.5, "nor_conv_3x3": 2.5, "avg_pool_3x3": 0.4}
COST = {"none": 0.0, "skip_connect": 0.1, "nor_conv_1x1": 0.8, "nor_conv_3x3": 2.0, "avg_pool_3x3": 0.3}
WEIGHT = (1.0, 0.7, 1.2, 0.5, 1.1, 1.4)  # positions matter differently


def objective(spec: ArchSpec) -> dict[str, float]:
    ops = spec["ops"]
    acc = 80 + sum(w * GAIN[o] for w, o in zip(WEIGHT, ops, strict=True))
    return {"accuracy": acc, "latency_ms": 1.0 + sum(COST[o] for o in ops)}


def estimate(spec: ArchSpec) -> dict[str, float]:
    return {"latency_ms": objective(spec)["latency_ms"]}


@functools.lru_cache(maxsize=4)
def oracle(limit: float) -> float:
    vals = [objective(s) for s in SPACE.enumerate()]
    return max(v["accuracy"] for v in vals if v["latency_ms"] <= limit)


LIMIT = 6.0


def test_registry_lists_the_methods() -> None:
    assert {"random", "evolution", "hsconas"} <= set(list_strategies())
    with pytest.raises(ConfigError, match=r"unknown search method 'nope'.*evolution"):
        SearchConfig(method="nope")
    with pytest.raises(ConfigError, match="does not take options"):
        run_search(SPACE, objective, SearchConfig(method="random", options={"population": 3}))


@pytest.mark.parametrize("method", sorted(STRATEGIES.names()))
def test_every_method_finds_a_feasible_answer_without_duplicates(method: str) -> None:
    cfg = SearchConfig(method=method, n_trials=40, seed=3, constraints=(Constraint("latency_ms", LIMIT),))
    res = run_search(SPACE, objective, cfg, estimate=estimate)
    assert len(res.history) == 40
    assert len({h.spec for h in res.history}) == 40  # the driver never spends budget twice
    assert all(h.feasible and h.metrics["latency_ms"] <= LIMIT for h in res.history)  # screened
    assert res.best is not None and res.best.metrics["latency_ms"] <= LIMIT
    assert res.best.metrics["accuracy"] == max(h.metrics["accuracy"] for h in res.history)
    assert oracle(LIMIT) - res.best.metrics["accuracy"] >= 0


@pytest.mark.parametrize("method", sorted(STRATEGIES.names()))
def test_same_seed_same_search(method: str) -> None:
    cfg = SearchConfig(method=method, n_trials=25, seed=7, constraints=(Constraint("latency_ms", LIMIT),))
    a = run_search(SPACE, objective, cfg, estimate=estimate)
    b = run_search(SPACE, objective, cfg, estimate=estimate)
    assert [h.spec for h in a.history] == [h.spec for h in b.history]


def test_evolutions_beat_random_on_average() -> None:
    gaps: dict[str, float] = {}
    best = oracle(LIMIT)
    for method in ("random", "hsconas"):
        found = [run_search(SPACE, objective, SearchConfig(method=method, n_trials=60, seed=s,
                                                           constraints=(Constraint("latency_ms", LIMIT),)),
                            estimate=estimate).best.metrics["accuracy"] for s in range(4)]  # type: ignore[union-attr]
        gaps[method] = best - float(np.mean(found))
    assert gaps["hsconas"] < gaps["random"]
    assert gaps["hsconas"] < 0.5


def test_infeasible_budget_names_the_smallest_value() -> None:
    cfg = SearchConfig(method="hsconas", n_trials=5, constraints=(Constraint("latency_ms", 0.5, lower_bound=1.0),))
    with pytest.raises(BudgetError, match=r"latency_ms budget 0\.5 is infeasible.*reaches 1\b.*>= 1"):
        run_search(SPACE, objective, cfg, estimate=estimate)


def test_a_screen_that_rejects_everything_stops_with_budget_error() -> None:
    cfg = SearchConfig(method="random", n_trials=3, max_proposals=50, constraints=(Constraint("latency_ms", 0.9),))
    with pytest.raises(BudgetError, match="50 proposals in a row"):
        run_search(SPACE, objective, cfg, estimate=estimate)


def test_objective_must_return_metric_and_constraints() -> None:
    cfg = SearchConfig(method="random", n_trials=2, constraints=(Constraint("latency_ms", 10.0),))
    with pytest.raises(ConfigError, match="finite 'latency_ms'"):
        run_search(SPACE, lambda s: {"accuracy": 1.0}, cfg)


def test_hsconas_shrinks_the_space_and_reports_it() -> None:
    cfg = SearchConfig(method="hsconas", n_trials=80, seed=0, constraints=(Constraint("latency_ms", LIMIT),),
                       options={"min_size": 8})
    res = run_search(SPACE, objective, cfg, estimate=estimate)
    shrink = res.strategy["shrink"]
    assert shrink[0] == {"after_trials": 0, "space_size": 5.0**6, "fraction_of_full": 1.0}
    assert [s["after_trials"] for s in shrink] == [0, 40, 60, 80]
    sizes = [s["space_size"] for s in shrink]
    assert sizes[-1] < sizes[0] and all(a >= b for a, b in itertools.pairwise(sizes))
    # the values kept are exactly those the elite used: the ops of the best architecture survive
    kept = res.strategy["allowed"]
    assert all(op in kept[i] for i, op in enumerate(res.best.spec["ops"]))  # type: ignore[union-attr]


def test_hsconas_without_shrink_keeps_the_full_space() -> None:
    strat = ConstrainedEvolution(SPACE, shrink=False)
    hist = [Evaluated(i, s, objective(s)) for i, s in enumerate(SPACE.sample(np.random.default_rng(0))
                                                                 for _ in range(60))]
    ctx = SearchContext("accuracy", lambda s: True)
    assert strat.describe(hist, ctx)["shrink"] == [{"after_trials": 0, "space_size": 5.0**6, "fraction_of_full": 1.0}]
    with pytest.raises(ConfigError, match="hsconas elite must be an int >= 1"):
        ConstrainedEvolution(SPACE, elite=0)


def test_hsconas_spends_the_budget_only_when_asked() -> None:
    """With `spend_budget` the evolved children use more of the latency budget than without (same seeds)."""
    def used(spend: bool) -> float:
        lat = [h.metrics["latency_ms"] for s in range(3) for h in run_search(
            SPACE, objective, SearchConfig(method="hsconas", n_trials=50, seed=s, options={"spend_budget": spend},
                                           constraints=(Constraint("latency_ms", LIMIT),)),
            estimate=estimate).history[20:]]  # after the uniform `init` proposals
        return float(np.mean(lat)) / LIMIT

    spent, plain = used(True), used(False)
    assert spent > plain + 0.05, (spent, plain)
    assert spent > 0.9
    with pytest.raises(ConfigError, match="spend_budget must be true or false"):
        ConstrainedEvolution(SPACE, spend_budget="yes")  # type: ignore[arg-type]


def test_positional_view_round_trips_and_mutates_inside_allowed() -> None:
    view = positional(SPACE)
    rng = np.random.default_rng(1)
    spec = SPACE.sample(rng)
    assert view.from_values(view.to_values(spec)) == spec
    allowed = [("nor_conv_3x3", "skip_connect")] * 6
    for _ in range(20):
        child = view.mutate(view.sample(rng, allowed), rng, allowed)
        assert set(child["ops"]) <= {"nor_conv_3x3", "skip_connect"}


def test_pareto_front_keeps_only_non_dominated() -> None:
    pts = [(90, 5), (85, 3), (80, 4), (92, 8), (92, 9), (70, 1)]
    hist = [Evaluated(i, SPACE.sample(np.random.default_rng(i)), {"accuracy": a, "latency_ms": lat})
            for i, (a, lat) in enumerate(pts)]
    front = pareto_front(hist, "accuracy", ("latency_ms",))
    assert [(h.metrics["accuracy"], h.metrics["latency_ms"]) for h in front] == [(70, 1), (85, 3), (90, 5), (92, 8)]
