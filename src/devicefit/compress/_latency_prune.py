"""Latency-driven structured pruning: prune in steps until a host target measures the model at or under a
latency goal. Each step's ratio is steered by a cheap estimate (latency ∝ MACs ∝ width², so keeping a fraction
sqrt(goal / now) of the channels) and every step is confirmed by a measurement on the target."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

from devicefit.core import BudgetError, ConfigError, check_positive, check_range
from devicefit.hardware import Target, measure_latency
from devicefit.nn import analyze

from ._prune import Finetune, PruneConfig, StructuredPruner

__all__ = ["LatencyPruneConfig", "prune_to_latency"]


@dataclass(frozen=True)
class LatencyPruneConfig:
    """latency_ms: the goal (median, batch 1) on `target`; max_steps: pruning rounds before giving up;
    min_step_ratio/max_step_ratio: bounds on the channels removed per round; prune: criterion, rounding and
    unsupported-op handling (its ratio/steps are set per round); repeats/threads: measurement settings."""

    latency_ms: float = 1.0
    target: str = "host-ort"
    max_steps: int = 8
    min_step_ratio: float = 0.05
    max_step_ratio: float = 0.3
    prune: PruneConfig = field(default_factory=PruneConfig)
    repeats: int = 30
    threads: int = 1

    def __post_init__(self) -> None:
        check_positive("latency_ms", self.latency_ms)
        check_range("min_step_ratio", self.min_step_ratio, 0.0, 1.0)
        check_range("max_step_ratio", self.max_step_ratio, 0.0, 1.0)
        if self.min_step_ratio > self.max_step_ratio:
            raise ConfigError(f"min_step_ratio ({self.min_step_ratio}) must be <= max_step_ratio "
                              f"({self.max_step_ratio})")
        if not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise ConfigError(f"max_steps must be an int >= 1, got {self.max_steps!r}")


def _measure(model: nn.Module, input_shape: tuple[int, ...], cfg: LatencyPruneConfig, target: Target | str) -> Any:
    return measure_latency(model, target, input_shape=input_shape, repeats=cfg.repeats, threads=cfg.threads)


def prune_to_latency(model: nn.Module, input_shape: tuple[int, ...], cfg: LatencyPruneConfig, *,
                     finetune: Finetune | None = None, strict: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Prune a copy of `model` round by round until its measured latency on `cfg.target` is <= `latency_ms`.

    Returns (model, record) where record holds every round's ratio, MACs and measured latency (median, cv).
    If `max_steps` rounds do not reach the goal the last model is returned with `reached: False`, or, with
    `strict`, a `BudgetError` names the goal and the best latency measured."""
    net, history = model, []
    lat = _measure(net, input_shape, cfg, cfg.target)
    history.append({"step": 0, "ratio": 0.0, "macs": analyze(net, input_shape).macs,
                    "latency_ms": lat.median_ms, "cv": lat.cv})
    for step in range(1, cfg.max_steps + 1):
        if lat.median_ms <= cfg.latency_ms:
            break
        keep = math.sqrt(cfg.latency_ms / lat.median_ms)
        ratio = min(max(1.0 - keep, cfg.min_step_ratio), cfg.max_step_ratio)
        pcfg = replace(cfg.prune, ratio=ratio, steps=1)
        net = StructuredPruner(pcfg).fit(net, input_shape, finetune=finetune).result_.model
        lat = _measure(net, input_shape, cfg, cfg.target)
        history.append({"step": step, "ratio": ratio, "macs": analyze(net, input_shape).macs,
                        "latency_ms": lat.median_ms, "cv": lat.cv})
    reached = lat.median_ms <= cfg.latency_ms
    if strict and not reached:
        raise BudgetError(f"latency_ms goal {cfg.latency_ms} on {cfg.target} not reached in {cfg.max_steps} "
                          f"rounds: best measured {lat.median_ms:.4g} ms")
    return net, {"goal_latency_ms": cfg.latency_ms, "target": cfg.target, "reached": reached, "history": history}
