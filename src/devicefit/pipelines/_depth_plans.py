"""Choosing how many residual blocks to drop before thinning channels, at a latency goal (`--drop-blocks auto`).

Which mix of depth and channel pruning loses least at a given speed-up depends on the network and the CPU. At 2x
on the AVX-512 VM, ResNet-20 lost 1.10 points with four of its blocks dropped and then channels thinned, 1.85
with five blocks, and 4.43 with channels alone (README, depth pruning). `search_depth` tries each count k from
0 up to the most that may go. Each plan drops the first k blocks of one greedy removal order (so plan k+1
extends plan k) and prunes channels by measurement until the goal is reached, with no fine-tuning between
rounds. The plan is then fine-tuned for one epoch on `images` training images (the same images for every plan)
and scored on the validation split. This is NetAdapt's short-term fine-tune as the judge, applied to the choice
between depth and width. The plan with the best validation accuracy among those that reached the goal wins; the
caller then prunes it again with its usual rounds and fine-tuning. Judges are registered in `PLAN_JUDGES`:
"finetune" is the one above; "macs" (the default) trains nothing and takes the plan that keeps the most MACs
at the goal, i.e. the most capacity for the long fine-tune that follows and the least cut past the goal.
Measured on ResNet-20 at 2x (README), the four plans trained to the end (11 epochs) ranked exactly as their
MACs. The one-epoch accuracies ranked them almost in reverse (Spearman -0.6): a short fine-tune rewards the
plans that stay closest to the source function, not the ones that recover best.

Each plan's record is written to `state_path` as soon as it is scored, so a killed search resumes with the next
plan. A record made with other settings (goal, target, images, removal order, fine-tune settings) is set aside
and the search starts over.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from devicefit import compress as C
from devicefit.core import Registry, atomic_write_json, read_json
from devicefit.nn import analyze

__all__ = ["PLAN_JUDGES", "PlanJudge", "best_plan", "search_depth"]


@dataclass(frozen=True)
class PlanJudge:
    """How plans at the goal are ranked: `score(plan)`, higher wins. trains: each plan is fine-tuned one epoch
    and scored on the validation split first (its record then holds val_accuracy / val_loss, else None)."""

    score: Callable[[dict[str, Any]], float]
    trains: bool
    description: str


PLAN_JUDGES: Registry[PlanJudge] = Registry("depth plan judge")
PLAN_JUDGES.add("finetune", PlanJudge(lambda p: p["val_accuracy"], True,
                                      "best validation accuracy after the one-epoch fine-tune"))
PLAN_JUDGES.add("macs", PlanJudge(lambda p: p["macs"], False, "most MACs kept at the goal (no training)"))


def best_plan(plans: Sequence[dict[str, Any]], judge: str = "macs") -> dict[str, Any]:
    """The plan to prune: the highest score of the registered `judge` among those that `reached` the goal (on a
    tie, the larger measured speed-up); when none reached it, the one with the largest speed-up. An empty list →
    ValueError; an unknown judge → ConfigError naming the known ones."""
    score = PLAN_JUDGES.get(judge).score
    if not plans:
        raise ValueError("no depth plan to choose from")
    reached = [p for p in plans if p["reached"]]
    if reached:
        return max(reached, key=lambda p: (score(p), p["speedup"]))
    return max(plans, key=lambda p: p["speedup"])


def search_depth(model: nn.Module, input_shape: tuple[int, ...], lcfg: C.LatencyPruneConfig,
                 depth: C.DepthPruneConfig, *, batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
                 train_ds: Any, val_ds: Any, finetune: Any, images: int, state_path: Path,
                 teacher: nn.Module | None = None, augment: str = "none", judge: str = "macs",
                 log: Callable[..., None] = lambda *a: None) -> dict[str, Any]:
    """Score every depth plan of `model` at the goal of `lcfg` (see the module docstring); `model` is untouched.

    depth: its criterion and keep_per_stage choose the removal order; `blocks` > 0 caps the counts tried.
    batches: labelled batches the block criterion scores on; finetune: the `TrainConfig` of the one-epoch
    fine-tune (its `epochs` is set to 1); images: how many training images that epoch sees; judge: a name in
    `PLAN_JUDGES` (one that does not train skips the fine-tune and the validation).

    Returns {"order": the greedy removal order, "plans": one record per count (blocks, removed, reached,
    speedup, latency_ms, macs, channel rounds, val_accuracy, val_loss, seconds), "chosen": the count to prune
    with, "judge", "method": how plans were made and judged}."""
    from devicefit import data as D
    from devicefit import train as T

    rank = PLAN_JUDGES.get(judge)
    most = len(C.droppable_blocks(model, depth.keep_per_stage))
    if depth.blocks:
        most = min(most, depth.blocks)
    order = C.DepthPruner(dataclasses.replace(depth, blocks=most)).fit(model, input_shape,
                                                                       batches=batches).removed_ if most else []
    n_images = min(images, len(train_ds))
    tune = dataclasses.replace(finetune, epochs=1)
    key: dict[str, Any] = {"order": order, "goal": lcfg.goal, "target": lcfg.target, "tolerance": lcfg.tolerance,
                           "criterion": depth.criterion, "judge": judge}
    if rank.trains:  # what the one-epoch scores depend on
        key |= {"images": n_images, "teacher": teacher is not None,
                "finetune": {k: v for k, v in dataclasses.asdict(tune).items() if k != "threads"}}
    plans: list[dict[str, Any]] = []
    if state_path.exists():
        stored = read_json(state_path)
        if stored.get("key") == key:
            plans = list(stored["plans"])
            log("depth search: resuming with %d of %d plans scored earlier (%s)", len(plans), most + 1, state_path)
        else:
            log("depth search: %s was made with other settings; starting over", state_path)
    sub = D.calibration_split(train_ds, n_images, seed=0) if rank.trains else None
    for k in range(len(plans), most + 1):
        t0 = time.perf_counter()
        start = C.bypass_blocks(model, order[:k]) if k else None
        net, record = C.prune_to_latency(model, input_shape, lcfg, start=start)
        last = record["history"][-1]
        score: dict[str, Any] = {"accuracy": None, "loss": None}
        if sub is not None:  # the judge trains
            net = copy.deepcopy(net)  # with nothing pruned it is `model` itself, which must stay untouched
            T.fit(net, sub, tune, teacher=teacher, augment_default=augment, progress=False)
            score = T.evaluate(net, val_ds)
        plans.append({"blocks": k, "removed": order[:k], "reached": record["reached"],
                      "speedup": record["speedup"], "latency_ms": last["latency_ms"],
                      "macs": analyze(net.eval(), input_shape).macs, "channel_rounds": len(record["history"]) - 1,
                      "val_accuracy": score["accuracy"], "val_loss": score["loss"],
                      "seconds": time.perf_counter() - t0})
        log("depth plan %d block(s) %s: %.3gx (%s), %d channel round(s), %.1f M MACs%s (%.0f s)", k,
            ", ".join(order[:k]) or "-", record["speedup"], "reached" if record["reached"] else "short of the goal",
            plans[-1]["channel_rounds"], plans[-1]["macs"] / 1e6,
            f", val accuracy {score['accuracy']:.4f} after one epoch on {n_images} images" if rank.trains else "",
            plans[-1]["seconds"])
        atomic_write_json(state_path, {"key": key, "plans": plans})
    chosen = best_plan(plans, judge)
    log("depth search chose %d block(s)%s", chosen["blocks"], "" if chosen["reached"] else
        " (no plan reached the goal: the fastest)")
    return {"order": order, "plans": plans, "chosen": chosen["blocks"],
            "judge": judge,
            "method": f"each count of blocks: dropped greedily ({depth.criterion}), channels pruned until "
                      f"{lcfg.goal} measured on {lcfg.target} without fine-tuning"
                      + (f", then one epoch on {n_images} training images and scored on the validation split "
                         f"({len(val_ds)} images)" if rank.trains else "")
                      + f"; judge {judge!r}: {rank.description}"}
