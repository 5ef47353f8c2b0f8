"""Latency-driven structured pruning: prune in steps until a host target measures the model at or under a
latency goal, or at or over a speed-up against the unpruned model. Each step's ratio is steered by a cheap
estimate (latency ∝ MACs ∝ width², so keeping a fraction sqrt(1 / remaining factor) of the channels) and every
step is confirmed by measuring the pruned and the unpruned model side by side, in interleaved rounds: on a
machine whose speed drifts, their paired ratio holds where an absolute figure taken minutes apart does not.

Near the goal a uniform step is coarse: with channels rounded to multiples of `round_to`, even the smallest
ratio takes a whole group from every narrow layer (on ResNet-20 with round_to=4, a 5% step removed 39% of the
MACs when 1% was missing). So each round prunes candidates, uniform (at the steered ratio and half of it) and
global (least important channels network-wide, from a quarter of it to twice it, at most `max_step_ratio`), and
keeps the one that removes the fewest MACs while still making the MAC cut the remaining speed-up needs; that
cut is estimated from the speed-up measured per MAC cut so far (latency ∝ MACs^γ, γ from the last
measurement, 1 before any). Global steps still move whole groups: on ResNet-20 with 16-channel groups the
smallest global candidate removed 15-20% of the MACs, because a residual stage's channels go together. With
`layer_steps`, each prunable layer (a channel group led by one layer, `prunable_layers`) losing one group of
`round_to` channels is a candidate too: 2-8% of the MACs there.

MACs steer badly where a step is small: a layer thinned from 16 to 8 channels, or a count the CPU's SIMD
width does not divide, saves less time than its MACs say, and a γ fitted to such a step inflates the next
cut. With `measure_candidates` every candidate is timed beside the unpruned model (one interleaved run per
round, a few seconds for a CIFAR network) and the round keeps the smallest cut measured at the goal; only when
none measures there does the MAC estimate choose.

Near the goal the measurement's own noise decides: this VM's per-round ratios of one pair spread about ±10%, so a
network that is 2.05x faster measures 1.95x in one run and triggers a round that was not needed. A round whose
measured figure lies within `confirm_within` of the goal is therefore timed again with `confirm_rounds` more
interleaved rounds and judged on all of them (the median of the pooled per-round ratios). The same holds for the
candidates of a measured round: those whose first figure lies within `confirm_within` of the goal are timed
together for `confirm_rounds` more rounds before the round chooses, so a busy spell that makes the smallest
sufficient cut read short does not hand the round to a much bigger one. `tolerance` accepts a figure that far
short of the goal as reached (0: none), for users who would rather stop than over-prune."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

from devicefit.core import BudgetError, ConfigError, check_int, check_positive, check_range
from devicefit.hardware import InterleavedLatency, measure_interleaved
from devicefit.nn import analyze

from ._prune import Finetune, PruneConfig, StructuredPruner, _finetuned, one_group_channels, prunable_layers

__all__ = ["LatencyPruneConfig", "prune_to_latency"]


@dataclass(frozen=True)
class LatencyPruneConfig:
    """The goal, exactly one of: `latency_ms` (median, batch 1, on `target`) or `speedup` (unpruned / pruned
    latency, > 1, measured side by side; robust to machine drift). max_steps: pruning rounds before giving up
    (0: only measure the starting model);
    min_step_ratio/max_step_ratio: bounds on the channels removed per round; prune: criterion, rounding and
    unsupported-op handling (its ratio/steps are set per round); rounds/repeats/threads: each measurement's
    interleaved rounds, timed runs per round and runtime threads; layer_steps: also try removing one channel
    group from a single layer each round (finer steps near the goal); measure_candidates: time every candidate
    beside the unpruned model and keep the smallest cut measured at the goal, before falling back on the MAC
    estimate; confirm_within: a figure within this fraction of the goal (either side), a round's or a measured
    candidate's, is timed again with `confirm_rounds` more rounds and judged on all of them (0: never);
    tolerance: a figure up to this fraction short of the goal counts as reached (0: none)."""

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
    layer_steps: bool = True
    measure_candidates: bool = True
    confirm_within: float = 0.1
    confirm_rounds: int = 15
    tolerance: float = 0.0

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
        check_int("max_steps", self.max_steps, 0)
        check_int("rounds", self.rounds, 1)
        check_int("repeats", self.repeats, 3)
        check_int("threads", self.threads, 1)
        check_int("confirm_rounds", self.confirm_rounds, 1)
        for name in ("layer_steps", "measure_candidates"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be a bool, got {getattr(self, name)!r}")
        for name, hi in (("confirm_within", 1.0), ("tolerance", 0.5)):
            v = getattr(self, name)
            if not isinstance(v, int | float) or isinstance(v, bool) or not 0.0 <= v < hi:
                raise ConfigError(f"{name} must be a number in [0, {hi}), got {v!r}")

    @property
    def goal(self) -> str:
        return f"{self.latency_ms:g} ms" if self.latency_ms is not None else f"{self.speedup:g}x speed-up"


def _round(step: int, ratio: float, base: nn.Module, net: nn.Module, input_shape: tuple[int, ...],
           cfg: LatencyPruneConfig) -> dict[str, Any]:
    """Measure `net` beside the unpruned `base` (interleaved) and describe the round; a pruned figure within
    `confirm_within` of the goal is timed again for `confirm_rounds` rounds and the round judged on all of them
    (`confirmed` keeps the first figures)."""
    models = {"unpruned": base} if net is base else {"unpruned": base, "pruned": net}
    name = "unpruned" if net is base else "pruned"

    def timed(rounds: int, seed: int) -> InterleavedLatency:
        return measure_interleaved(models, cfg.target, input_shape=input_shape, rounds=rounds, repeats=cfg.repeats,
                                   threads=cfg.threads, seed=seed)

    def describe(m: InterleavedLatency) -> dict[str, Any]:
        return {"step": step, "ratio": ratio, "macs": macs, "latency_ms": m.median_ms(name),
                "unpruned_ms": m.median_ms("unpruned"), "speedup": m.ratio("unpruned", name),
                "rounds_ms": {k: list(v) for k, v in m.rounds_ms.items()}}

    macs = analyze(net, input_shape).macs
    first = timed(cfg.rounds, step)
    out = describe(first)
    if net is base or not _near_goal(out, cfg):
        return out
    pooled = _pooled(first, timed(cfg.confirm_rounds, 10_000 + step))
    return describe(pooled) | {"confirmed": _first_look(out, cfg)}


def _pooled(first: InterleavedLatency, more: InterleavedLatency) -> InterleavedLatency:
    """The rounds of `first` and `more` (a second interleaved run of some of the same models) together, for the
    models `more` timed."""
    return InterleavedLatency(first.target, {k: tuple(first.rounds_ms[k]) + tuple(v) for k, v in
                                             more.rounds_ms.items()}, first.method)


def _first_look(desc: dict[str, Any], cfg: LatencyPruneConfig) -> dict[str, Any]:
    """What a confirmed figure keeps of its first measurement (`confirmed`), and how many rounds it was judged on."""
    return {"first_speedup": desc["speedup"], "first_latency_ms": desc["latency_ms"],
            "rounds": cfg.rounds + cfg.confirm_rounds}


def _near_goal(desc: dict[str, Any], cfg: LatencyPruneConfig) -> bool:
    return bool(cfg.confirm_within) and abs(math.log(_remaining(desc, cfg))) <= math.log1p(cfg.confirm_within)


def _remaining(h: dict[str, Any], cfg: LatencyPruneConfig) -> float:
    """How many times faster the model still has to become (<= 1: goal reached), `tolerance` allowed for."""
    if cfg.latency_ms is not None:
        left = float(h["latency_ms"]) / cfg.latency_ms
    else:
        left = float(cfg.speedup) / float(h["speedup"])
    return left * (1.0 - cfg.tolerance)


def _needed_mac_cut(history: list[dict[str, Any]], left: float) -> float:
    """The factor by which MACs must still fall for latency to fall by `left`: latency ∝ MACs^γ with γ from
    the speed-up measured since round 0 against the MACs removed since then (clipped to [0.3, 1.5]), 1 before
    the first cut."""
    first, last = history[0], history[-1]
    gamma = 1.0
    if last["macs"] < first["macs"] and last["speedup"] > first["speedup"]:
        gained = last["speedup"] / first["speedup"]  # round 0 may already be a slimmer start than the model
        gamma = min(max(math.log(gained) / math.log(first["macs"] / last["macs"]), 0.3), 1.5)
    return float(left ** (1.0 / gamma))


_Step = tuple[nn.Module, dict[str, Any], list[dict[str, Any]]]


def _smallest_sufficient_step(net: nn.Module, macs0: int, input_shape: tuple[int, ...], cfg: LatencyPruneConfig,
                              ratio: float, cut: float, base: nn.Module, seed: int) -> _Step | None:
    """Prune `net` (`macs0` MACs; not in place) uniformly at `ratio` and `ratio`/2, globally at ratios from
    `ratio`/4 to 2·`ratio` (at most `max_step_ratio`) and, with `layer_steps`, one channel group out of each
    prunable layer alone. With `measure_candidates`, time them all beside the unpruned `base` and return the one
    that removes the fewest MACs among those measured at the goal (`chosen_by: "measured"`; a candidate whose
    first figure is within `confirm_within` of the goal is judged on `confirm_rounds` more rounds, pooled, and
    keeps the first look in `confirmed`); otherwise (or when
    none measures there) the one that removes the fewest MACs while cutting them by at least `cut`, or if none
    does, the one that cuts most (`chosen_by: "macs"`). Returns it, its description and every candidate's (mode,
    ratio, MACs, `layer` for a single-layer one, measured speed-up and latency); None when no candidate removes
    anything (every layer at its `max_layer_ratio` or rounding floor)."""
    found: list[tuple[int, dict[str, Any], nn.Module]] = []
    ladder = [("uniform", ratio), ("uniform", ratio / 2)] + [
        ("global", r) for r in sorted({min(f * ratio, cfg.max_step_ratio) for f in (2.0, 1.5, 1.0, 0.5, 0.25)},
                                      reverse=True)]
    for mode, r in ladder:
        pcfg = replace(cfg.prune, ratio=r, steps=1, global_ratio=mode == "global")
        res = StructuredPruner(pcfg).fit(net, input_shape).result_
        if res.macs_after < macs0:
            found.append((res.macs_after, {"mode": mode, "ratio": r, "macs": res.macs_after}, res.model))
    if cfg.layer_steps:
        one_step = StructuredPruner(replace(cfg.prune, steps=1))
        for layer, channels in prunable_layers(net, input_shape, cfg.prune).items():
            group = one_group_channels(channels, cfg.prune)
            if not group:
                continue
            res = one_step.fit(net, input_shape, layer_ratios={layer: group / channels}).result_
            if res.macs_after < macs0:
                found.append((res.macs_after, {"mode": "layer", "ratio": group / channels, "layer": layer,
                                               "macs": res.macs_after}, res.model))
    if not found:
        return None
    at_goal: list[tuple[int, dict[str, Any], nn.Module]] = []
    if cfg.measure_candidates:
        m = measure_interleaved({"unpruned": base, **{str(i): f[2] for i, f in enumerate(found)}}, cfg.target,
                                input_shape=input_shape, rounds=cfg.rounds, repeats=cfg.repeats, threads=cfg.threads,
                                seed=seed)
        for i, (_, desc, _) in enumerate(found):
            desc |= {"speedup": m.ratio("unpruned", str(i)), "latency_ms": m.median_ms(str(i))}
        near = [i for i, f in enumerate(found) if _near_goal(f[1], cfg)]
        if near:  # a short first look would make the round take a bigger cut than it needs: time these again
            more = measure_interleaved({"unpruned": base, **{str(i): found[i][2] for i in near}}, cfg.target,
                                       input_shape=input_shape, rounds=cfg.confirm_rounds, repeats=cfg.repeats,
                                       threads=cfg.threads, seed=seed + 10_000)
            pooled = _pooled(m, more)
            for i in near:
                desc = found[i][1]
                desc |= {"confirmed": _first_look(desc, cfg), "speedup": pooled.ratio("unpruned", str(i)),
                         "latency_ms": pooled.median_ms(str(i))}
        at_goal = [f for f in found if _remaining(f[1], cfg) <= 1.0]
    enough = [f for f in found if macs0 / f[0] >= cut]
    if at_goal:
        _, chosen, model = max(at_goal, key=lambda f: f[0])
    else:
        _, chosen, model = max(enough, key=lambda f: f[0]) if enough else min(found, key=lambda f: f[0])
    return model, {**chosen, "chosen_by": "measured" if at_goal else "macs"}, [f[1] for f in found]


def prune_to_latency(model: nn.Module, input_shape: tuple[int, ...], cfg: LatencyPruneConfig, *,
                     finetune: Finetune | None = None, strict: bool = False,
                     start: nn.Module | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Prune a copy of `model` round by round until the goal of `cfg` is measured on `cfg.target`.

    `start`: an already slimmer version of `model` (e.g. with residual blocks removed) to prune on from; round 0
    measures it beside `model`, and every speed-up stays against `model`.

    Returns (model, record): record holds every round's channel ratio, MACs, the pruned and unpruned
    latency (medians of interleaved rounds), their paired ratio (`speedup`), and each round's candidates and
    the MAC cut it needed. If `max_steps` rounds do not reach the goal, or a round finds nothing left to remove
    (`stopped` says why), the last model is returned with `reached: False`, or, with `strict`, a `BudgetError`
    names the goal, the reason and the best figure measured."""
    net = model if start is None else start
    history, stopped = [_round(0, 0.0, model, net, input_shape, cfg)], None
    for step in range(1, cfg.max_steps + 1):
        left = _remaining(history[-1], cfg)
        if left <= 1.0:
            break
        ratio = min(max(1.0 - math.sqrt(1.0 / left), cfg.min_step_ratio), cfg.max_step_ratio)
        cut = _needed_mac_cut(history, left)
        step_result = _smallest_sufficient_step(net, history[-1]["macs"], input_shape, cfg, ratio, cut, model,
                                                seed=20_000 + step)
        if step_result is None:
            stopped = (f"round {step}: no candidate up to ratio {min(2 * ratio, cfg.max_step_ratio):.3g} removes "
                       f"anything more (round_to={cfg.prune.round_to}, round_floor={cfg.prune.round_floor}, "
                       f"max_layer_ratio={cfg.prune.max_layer_ratio})")
            break
        net, chosen, candidates = step_result
        if finetune is not None:
            net = _finetuned(finetune, net)
        history.append(_round(step, chosen["ratio"], model, net, input_shape, cfg)
                       | {k: chosen[k] for k in ("mode", "layer", "chosen_by") if k in chosen}
                       | {"needed_mac_cut": cut, "candidates": candidates})
    last = history[-1]
    reached = _remaining(last, cfg) <= 1.0
    if strict and not reached:
        raise BudgetError(f"goal {cfg.goal} on {cfg.target} not reached "
                          f"{'(' + stopped + ')' if stopped else f'in {cfg.max_steps} rounds'}: last measured "
                          f"{last['latency_ms']:.4g} ms, {last['speedup']:.3g}x the unpruned model")
    return net, {"goal_latency_ms": cfg.latency_ms, "goal_speedup": cfg.speedup, "target": cfg.target,
                 "reached": reached, "tolerance": cfg.tolerance, "speedup": last["speedup"], "history": history,
                 "stopped": stopped,
                 "method": f"each round: pruned and unpruned timed in {cfg.rounds} interleaved rounds x "
                           f"{cfg.repeats} runs, {cfg.threads} thread(s), batch 1"
                           + (f"; a figure within {cfg.confirm_within:.0%} of the goal timed for "
                              f"{cfg.confirm_rounds} more rounds and judged on all" if cfg.confirm_within else "")}
