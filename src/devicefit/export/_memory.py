"""From an int8 graph to arena buffers: tensor lifetimes, in-place reuse and each op's scratch.

Steps are op indices. The graph input is copied into the arena before step 0 and the output copied out
after the last step, so both live in the arena like every other tensor (as in TFLite Micro).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ._ir import QGraph, QOp
from ._planner import MEMORY_PLANNERS, Buffer, live_lower_bound_bytes

__all__ = ["ArenaPlan", "graph_buffers", "plan_arena"]

# in-place capability of an op kind: "alias" (output is the input's bytes, e.g. reshape), "reuse"
# (elementwise: output may overwrite an input that dies at this op) or "reuse_other" (like "reuse", but only
# an input after the first, in a buffer other than the first input's: a conv fused with a residual add writes
# into its dying skip operand while it reads its own input through windows); see the emitters' `in_place`.
InPlace = Callable[[str], str]
ScratchBytes = Callable[[QOp, QGraph], int]


@dataclass(frozen=True)
class ArenaPlan:
    """Where every tensor and scratch area lives in the arena, and what the plan costs.

    `tensor_offsets` maps tensor names to byte offsets, `scratch_offsets` op indices to offsets;
    `arena_bytes` is the planned arena, `naive_bytes` the sum of all buffers without reuse or
    aliasing, `lower_bound_bytes` the most bytes simultaneously live (with the same in-place merges).
    `unfused_lower_bound_bytes` is that bound for the graph before conv + add fusion when the plan is of a
    fused graph (`plan_for_c`), else None.
    """

    planner: str
    tensor_offsets: dict[str, int]
    scratch_offsets: dict[int, int]
    buffers: tuple[Buffer, ...]
    arena_bytes: int
    naive_bytes: int
    lower_bound_bytes: int
    unfused_lower_bound_bytes: int | None = None

    def to_dict(self) -> dict[str, object]:
        return {"planner": self.planner, "arena_bytes": self.arena_bytes, "naive_bytes": self.naive_bytes,
                "lower_bound_bytes": self.lower_bound_bytes,
                "unfused_lower_bound_bytes": self.unfused_lower_bound_bytes,
                "buffers": [{"name": b.name, "kind": b.kind, "size_bytes": b.size_bytes, "first_step": b.first_step,
                             "last_step": b.last_step, "offset": self._offset(b)} for b in self.buffers]}

    def _offset(self, b: Buffer) -> int:
        if b.kind == "scratch":
            return self.scratch_offsets[int(b.name.rsplit("@", 1)[1])]
        return self.tensor_offsets[b.name]


def _lifetimes(graph: QGraph) -> dict[str, tuple[int, int]]:
    end = len(graph.ops) - 1
    life = {graph.input: (0, 0)}
    for i, op in enumerate(graph.ops):
        life[op.output] = (i, i)
        for t in op.inputs:
            life[t] = (life[t][0], max(life[t][1], i))
    life[graph.output] = (life[graph.output][0], end)
    return life


def graph_buffers(graph: QGraph, in_place: InPlace | None, scratch: ScratchBytes | None
                  ) -> tuple[list[Buffer], dict[str, str]]:
    """Buffers to plan and the map tensor → buffer name (tensors merged in place share one buffer).

    With `in_place` None every tensor gets its own buffer (no aliasing, no reuse).
    """
    life = _lifetimes(graph)
    owner = {t: t for t in life}  # tensor → representative tensor of its buffer
    span = dict(life)  # representative → merged lifetime
    for i, op in enumerate(graph.ops):
        mode = in_place(op.kind) if in_place else "none"
        candidates = op.inputs if mode != "reuse_other" else \
            [t for t in op.inputs[1:] if owner[t] != owner[op.inputs[0]]]
        src = next((owner[t] for t in candidates if mode == "alias" or
                    (mode in ("reuse", "reuse_other") and span[owner[t]][1] == i and t != graph.output)), None)
        if mode != "none" and src is not None:
            owner[op.output] = src
            span[src] = (span[src][0], max(span[src][1], life[op.output][1]))
    buffers = [Buffer(t, graph.tensors[t].nbytes, *span[t]) for t in life if owner[t] == t]
    for i, op in enumerate(graph.ops):
        n = scratch(op, graph) if scratch else 0
        if n:
            buffers.append(Buffer(f"scratch@{i}", n, i, i, "scratch"))
    return buffers, owner


def plan_arena(graph: QGraph, planner: str = "greedy", *, in_place: InPlace | None = None,
               scratch: ScratchBytes | None = None, alignment: int = 4) -> ArenaPlan:
    """Plan `graph`'s arena with the registered `planner` ("naive", "greedy", ...)."""
    buffers, owner = graph_buffers(graph, in_place, scratch)
    p = MEMORY_PLANNERS.get(planner)(alignment)
    for b in buffers:
        p.add_buffer(b.name, b.size_bytes, b.first_step, b.last_step, b.kind)
    p.plan()
    separate, _ = graph_buffers(graph, None, scratch)
    naive = MEMORY_PLANNERS.get("naive")(alignment)
    for b in separate:
        naive.add_buffer(b.name, b.size_bytes, b.first_step, b.last_step, b.kind)
    return ArenaPlan(
        planner=planner,
        tensor_offsets={t: p.offset(r) for t, r in owner.items()},
        scratch_offsets={int(b.name.rsplit("@", 1)[1]): p.offset(b.name) for b in buffers if b.kind == "scratch"},
        buffers=tuple(buffers), arena_bytes=p.arena_bytes_, naive_bytes=naive.plan().arena_bytes_,
        lower_bound_bytes=live_lower_bound_bytes(buffers, alignment))
