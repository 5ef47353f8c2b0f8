"""Latency-driven structured pruning: prune in steps until a host target measures the model at or under a
latency goal, or at or over a speed-up against the unpruned model. Each step's ratio is steered by a cheap
estimate (latency ∝ MACs ∝ width², so keeping a fraction sqrt(1 / remaining factor) of the channels) and every
step is confirmed by measuring the pruned and the unpruned model side by side, in interleaved rounds: on a
machine whose speed drifts, their paired ratio holds where an absolute figure taken minutes apart does not."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

from devicefit.core import BudgetError, ConfigError, check_int, check_positive, check_range
from devicefit.hardware import measure_interleaved
from devicefit.nn import analyze

from ._prune import Finetune, PruneConfig, StructuredPruner

__all__ = ["LatencyPruneConfig", "prune_to_latency"]


@dataclass(frozen=True)
class LatencyPruneConfig:
    """The goal, exactly one of: `latency_ms` (median, batch 1, on `target`) or `speedup` (unpruned / pruned
    latency, > 1, measured side by side; robust to machine drift). max_steps: pruning rounds before giving up;
    min_step_ratio/max_step_ratio: bounds on the channels removed per round; prune: criterion, rounding and
    unsupported-op handling (its ratio/steps are set per round); rounds/repeats/threads: each measurement's
    interleaved rounds, timed runs per round and runtime threads."""

    latency_ms: float | None = None
    speedup: float | None = None
    target: str = "host-ort"
    max_steps: int = 8
    min_step_ratio: float = 0.05
    max_step_ratio: float = 0.3
    prune: PruneConfig = field(default_factory=PruneConfig)
    rounds: int = 5
    repeats: int = 30
    threads: int = 1

    def __post_init__(self) -> None:
        if (self.latency_ms is None) == (self.speedup is None):
            raise ConfigError(f"give exactly one goal: latency_ms or speedup (got latency_ms={self.latency_ms!r}, "
                              f"speedup={self.speedup!r})")
        if self.latency_ms is not None:
            check_positive("latency_ms", self.latency_ms)
        if self.speedup is not None and not (isinstance(self.speedup, int | float) and self.speedup > 1.0):
            raise ConfigError(f"speedup must be a number > 1 (unpruned / pruned latency), got {self.speedup!r}")
        check_range("min_step_ratio", self.min_step_ratio, 0.0, 1.0)
        check_range("max_step_ratio", self.max_step_ratio, 0.0, 1.0)
        if self.min_step_ratio > self.max_step_ratio:
            raise ConfigError(f"min_step_ratio ({self.min_step_ratio}) must be <= max_step_ratio "
                              f"({self.max_step_ratio})")
        check_int("max_steps", self.max_steps, 1)
        check_int("rounds", self.rounds, 1)
        check_int("repeats", self.repeats, 3)
        check_int("threads", self.threads, 1)

    @property
    def goal(self) -> str:
        return f"{self.latency_ms:g} ms" if self.latency_ms is not None else f"{self.speedup:g}x speed-up"


def _round(step: int, ratio: float, base: nn.Module, net: nn.Module, input_shape: tuple[int, ...],
           cfg: LatencyPruneConfig) -> dict[str, Any]:
    """Measure `net` beside the unpruned `base` (interleaved) and describe the round."""
    models = {"unpruned": base} if net is base else {"unpruned": base, "pruned": net}
    m = measure_interleaved(models, cfg.target, input_shape=input_shape, rounds=cfg.rounds, repeats=cfg.repeats,
                            threads=cfg.threads, seed=step)
    name = "unpruned" if net is base else "pruned"
    return {"step": step, "ratio": ratio, "macs": analyze(net, input_shape).macs, "latency_ms": m.median_ms(name),
            "unpruned_ms": m.median_ms("unpruned"), "speedup": m.ratio("unpruned", name),
            "rounds_ms": {k: list(v) for k, v in m.rounds_ms.items()}}


def _remaining(h: dict[str, Any], cfg: LatencyPruneConfig) -> float:
    """How many times faster the model still has to become (<= 1: goal reached)."""
    if cfg.latency_ms is not None:
        return float(h["latency_ms"]) / cfg.latency_ms
    return float(cfg.speedup) / float(h["speedup"])


def prune_to_latency(model: nn.Module, input_shape: tuple[int, ...], cfg: LatencyPruneConfig, *,
                     finetune: Finetune | None = None, strict: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Prune a copy of `model` round by round until the goal of `cfg` is measured on `cfg.target`.

    Returns (model, record): record holds every round's channel ratio, MACs, the pruned and unpruned
    latency (medians of interleaved rounds) and their paired ratio (`speedup`). If `max_steps` rounds do not
    reach the goal the last model is returned with `reached: False`, or, with `strict`, a `BudgetError` names
    the goal and the best figure measured."""
    net, history = model, [_round(0, 0.0, model, model, input_shape, cfg)]
    for step in range(1, cfg.max_steps + 1):
        left = _remaining(history[-1], cfg)
        if left <= 1.0:
            break
        ratio = min(max(1.0 - math.sqrt(1.0 / left), cfg.min_step_ratio), cfg.max_step_ratio)
        pcfg = replace(cfg.prune, ratio=ratio, steps=1)
        net = StructuredPruner(pcfg).fit(net, input_shape, finetune=finetune).result_.model
        history.append(_round(step, ratio, model, net, input_shape, cfg))
    last = history[-1]
    reached = _remaining(last, cfg) <= 1.0
    if strict and not reached:
        raise BudgetError(f"goal {cfg.goal} on {cfg.target} not reached in {cfg.max_steps} rounds: last measured "
                          f"{last['latency_ms']:.4g} ms, {last['speedup']:.3g}x the unpruned model")
    return net, {"goal_latency_ms": cfg.latency_ms, "goal_speedup": cfg.speedup, "target": cfg.target,
                 "reached": reached, "speedup": last["speedup"], "history": history,
                 "method": f"each round: pruned and unpruned timed in {cfg.rounds} interleaved rounds x "
                           f"{cfg.repeats} runs, {cfg.threads} thread(s), batch 1"}
