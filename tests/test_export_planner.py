"""Memory planners (conformance over every registered planner) and graph lifetimes with in-place reuse."""

from __future__ import annotations

import numpy as np
import pytest

from devicefit.core import ConfigError, NotFittedError
from devicefit.export import (
    MEMORY_PLANNERS,
    Buffer,
    QGraph,
    QOp,
    QTensor,
    graph_buffers,
    live_lower_bound_bytes,
    plan_arena,
)


def _random_buffers(rng: np.random.Generator, n: int) -> list[Buffer]:
    out = []
    for i in range(n):
        first = int(rng.integers(0, 30))
        out.append(Buffer(f"t{i}", int(rng.integers(1, 5000)), first, first + int(rng.integers(0, 6)),
                          "scratch" if i % 7 == 0 else "tensor"))
    return out


def _plan(name: str, buffers: list[Buffer], alignment: int = 4):  # type: ignore[no-untyped-def]
    p = MEMORY_PLANNERS.get(name)(alignment)
    for b in buffers:
        p.add_buffer(b.name, b.size_bytes, b.first_step, b.last_step, b.kind)
    return p.plan()


@pytest.mark.parametrize("name", MEMORY_PLANNERS.names())
@pytest.mark.parametrize("seed", range(8))
def test_live_buffers_never_overlap_and_arena_is_bounded(name: str, seed: int) -> None:
    buffers = _random_buffers(np.random.default_rng(seed), 40)
    p = _plan(name, buffers)
    for i, a in enumerate(buffers):
        oa = p.offset(a.name)
        assert oa % 4 == 0 and oa + a.size_bytes <= p.arena_bytes_
        for b in buffers[i + 1:]:
            ob = p.offset(b.name)
            if a.overlaps_in_time(b):
                assert oa + a.size_bytes <= ob or ob + b.size_bytes <= oa, (a, b)
    assert live_lower_bound_bytes(buffers, 4) <= p.arena_bytes_ <= sum((b.size_bytes + 3) // 4 * 4 for b in buffers)


@pytest.mark.parametrize("name", MEMORY_PLANNERS.names())
def test_planner_contract(name: str) -> None:
    p = MEMORY_PLANNERS.get(name)()
    with pytest.raises(NotFittedError):
        p.offset("x")
    p.add_buffer("x", 10, 0, 1)
    with pytest.raises(ConfigError, match="already added"):
        p.add_buffer("x", 10, 0, 1)
    with pytest.raises(ConfigError, match="last_step"):
        p.add_buffer("y", 10, 3, 1)
    assert p.plan() is p and p.offset("x") == 0 and p.arena_bytes_ == 12


def test_naive_is_the_sum_and_greedy_reuses_dead_space() -> None:
    chain = [Buffer(f"t{i}", 1000 * (i + 1), i, i + 1) for i in range(5)]  # a chain: each lives two steps
    assert _plan("naive", chain).arena_bytes_ == 15000
    greedy = _plan("greedy", chain)
    assert greedy.arena_bytes_ == live_lower_bound_bytes(chain) == 9000  # t3 + t4 live together
    assert greedy.offset("t4") == 0 and greedy.offset("t3") == 5000  # largest first, next in the first gap


def _t(name: str, shape: tuple[int, ...]) -> QTensor:
    return QTensor(name, shape, 0.1, 0)


def _add_graph() -> QGraph:
    """x (1, 4, 4, 8) → pool → a → pool → b; s = a + b; r = reshape(s) to (1, 128)."""
    tensors = {n: _t(n, (1, 4, 4, 8)) for n in ("x", "a", "b", "s")} | {"r": _t("r", (1, 128))}
    pool = {"kernel": (1, 1), "stride": (1, 1), "padding": (0, 0, 0, 0), "act_min": -128, "act_max": 127}
    add = {"left_shift": 20, "in1_multiplier": 1 << 30, "in1_shift": 0, "in2_multiplier": 1 << 30, "in2_shift": 0,
           "out_multiplier": 1 << 30, "out_shift": 0, "act_min": -128, "act_max": 127}
    ops = (QOp("max_pool2d", "p1", ("x",), "a", pool), QOp("max_pool2d", "p2", ("a",), "b", pool),
           QOp("add", "add", ("a", "b"), "s", add), QOp("reshape", "flat", ("s",), "r"))
    return QGraph(tensors, ops, "x", "r")


def test_in_place_add_and_reshape_share_buffers() -> None:
    g = _add_graph()
    modes = {"add": "reuse", "reshape": "alias"}
    buffers, owner = graph_buffers(g, lambda k: modes.get(k, "none"), None)
    assert owner["s"] in ("a", "b") and owner["r"] == owner["s"]  # add overwrote a dying input, reshape aliased
    assert len(buffers) == 3
    separate, owner2 = graph_buffers(g, None, None)
    assert len(separate) == 5 and all(owner2[t] == t for t in owner2)
    plan = plan_arena(g, "greedy", in_place=lambda k: modes.get(k, "none"))
    assert plan.tensor_offsets["r"] == plan.tensor_offsets["s"]
    assert plan.arena_bytes == plan.lower_bound_bytes == 256 and plan.naive_bytes == 5 * 128


def test_scratch_buffers_are_planned_for_their_op_only() -> None:
    g = _add_graph()
    plan = plan_arena(g, "greedy", scratch=lambda op, graph: 64 if op.kind == "add" else 0)
    (scratch,) = [b for b in plan.buffers if b.kind == "scratch"]
    assert (scratch.first_step, scratch.last_step, scratch.size_bytes) == (2, 2, 64)
    off = plan.scratch_offsets[2]
    for t in ("a", "b", "s"):  # live at step 2 with the scratch
        lo = plan.tensor_offsets[t]
        assert off + 64 <= lo or lo + 128 <= off
    assert plan.to_dict()["buffers"][-1]["offset"] == off
