"""Arena memory planning: buffers with lifetimes → offsets in one static arena.

Contract (`MemoryPlanner`): `add_buffer(name, size_bytes, first_step, last_step)` any number of times
(a buffer is live from the op step that writes it to the last step that reads it, both inclusive),
then `plan()` returns self with `offsets_` (name → byte offset) and `arena_bytes_`; two buffers whose
lifetimes intersect never overlap in the arena. Offsets are aligned to `alignment` bytes.
Implementations register in `MEMORY_PLANNERS`.
"""

from __future__ import annotations

from dataclasses import dataclass

from devicefit.core import ConfigError, NotFittedError, Registry

__all__ = ["MEMORY_PLANNERS", "Buffer", "GreedyBySizePlanner", "MemoryPlanner", "NaivePlanner",
           "live_lower_bound_bytes"]


@dataclass(frozen=True)
class Buffer:
    """A tensor or scratch area: `size_bytes`, live over op steps [first_step, last_step]."""

    name: str
    size_bytes: int
    first_step: int
    last_step: int
    kind: str = "tensor"  # "tensor" or "scratch"

    def overlaps_in_time(self, other: Buffer) -> bool:
        return self.first_step <= other.last_step and other.first_step <= self.last_step


def _align(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


class MemoryPlanner:
    """Base class: stores buffers; subclasses implement `_place(buffers) -> {name: offset}`."""

    def __init__(self, alignment: int = 4) -> None:
        self.alignment = alignment
        self._buffers: dict[str, Buffer] = {}

    def add_buffer(self, name: str, size_bytes: int, first_step: int, last_step: int, kind: str = "tensor") -> None:
        if name in self._buffers:
            raise ConfigError(f"buffer {name!r} was already added")
        if size_bytes < 0 or last_step < first_step:
            raise ConfigError(f"buffer {name!r}: need size_bytes >= 0 and last_step >= first_step, got "
                              f"size {size_bytes}, steps [{first_step}, {last_step}]")
        self._buffers[name] = Buffer(name, int(size_bytes), int(first_step), int(last_step), kind)

    @property
    def buffers(self) -> list[Buffer]:
        return list(self._buffers.values())

    def plan(self) -> MemoryPlanner:
        self.offsets_ = self._place(self.buffers)
        self.arena_bytes_ = max((self.offsets_[b.name] + _align(b.size_bytes, self.alignment)
                                 for b in self.buffers), default=0)
        return self

    def offset(self, name: str) -> int:
        if not hasattr(self, "offsets_"):
            raise NotFittedError(f"{type(self).__name__}: call plan() before reading offsets")
        return self.offsets_[name]

    def _place(self, buffers: list[Buffer]) -> dict[str, int]:
        raise NotImplementedError


MEMORY_PLANNERS: Registry[type[MemoryPlanner]] = Registry("memory planner")


@MEMORY_PLANNERS.register("naive")
class NaivePlanner(MemoryPlanner):
    """Every buffer gets its own bytes: the arena is the (aligned) sum of all buffers. The baseline."""

    def _place(self, buffers: list[Buffer]) -> dict[str, int]:
        offsets, at = {}, 0
        for b in buffers:
            offsets[b.name] = at
            at += _align(b.size_bytes, self.alignment)
        return offsets


@MEMORY_PLANNERS.register("greedy")
class GreedyBySizePlanner(MemoryPlanner):
    """Greedy by size (TFLite Micro GreedyMemoryPlanner; Pisarchyk & Lee, 2020, "greedy by size"):
    place buffers largest first, each at the lowest offset where it fits in a gap between the already
    placed buffers whose lifetimes intersect its own."""

    def _place(self, buffers: list[Buffer]) -> dict[str, int]:
        offsets: dict[str, int] = {}
        placed: list[Buffer] = []
        for b in sorted(buffers, key=lambda b: (-b.size_bytes, b.first_step, b.name)):
            size = _align(b.size_bytes, self.alignment)
            busy = sorted((offsets[p.name], offsets[p.name] + _align(p.size_bytes, self.alignment))
                          for p in placed if p.overlaps_in_time(b))
            at = 0
            for lo, hi in busy:
                if at + size <= lo:
                    break
                at = max(at, hi)
            offsets[b.name] = at
            placed.append(b)
        return offsets


def live_lower_bound_bytes(buffers: list[Buffer], alignment: int = 1) -> int:
    """The largest total size of buffers live at one step: no planner can use a smaller arena."""
    steps = {s for b in buffers for s in (b.first_step, b.last_step)}
    return max((sum(_align(b.size_bytes, alignment) for b in buffers if b.first_step <= s <= b.last_step)
                for s in steps), default=0)
