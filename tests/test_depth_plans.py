"""Choosing the number of residual blocks to drop at a latency goal (`--drop-blocks auto`): one plan per count,
each pruned to the goal and scored after a short fine-tune, the best at the goal chosen, a killed search resumed,
and the prune job and command that use it."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from devicefit import compress as C
from devicefit.compress import _latency_prune
from devicefit.core import ConfigError
from devicefit.data import ArrayDataset
from devicefit.models import build, default_spec
from devicefit.nn import analyze
from devicefit.pipelines._compress_job import CompressJobConfig, default_finetune
from devicefit.pipelines._depth_plans import best_plan, search_depth

SHAPE = (3, 32, 32)


class _FixedCostMachine:
    """A fake CPU: each convolution costs 0.05 ms besides 1 ms per 10 M MACs (exact, no drift), so dropping a
    block saves more than its MACs say."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, models: dict[str, nn.Module], target: str, *, rounds: int, **kw: object) -> object:
        from devicefit.hardware import InterleavedLatency

        self.calls += 1
        cost = {k: 0.05 * sum(isinstance(m, nn.Conv2d) for m in net.modules()) + analyze(net, SHAPE).macs / 1e7
                for k, net in models.items()}
        return InterleavedLatency(target, {k: (v,) * rounds for k, v in cost.items()}, {"threads": 1})


def _plan(blocks: int, acc: float, speedup: float, reached: bool = True) -> dict[str, Any]:
    return {"blocks": blocks, "val_accuracy": acc, "speedup": speedup, "reached": reached}


def test_best_plan_is_the_most_accurate_at_the_goal_else_the_fastest() -> None:
    plans = [_plan(0, 0.70, 2.0), _plan(1, 0.75, 2.1), _plan(2, 0.80, 1.8, reached=False), _plan(3, 0.75, 2.3)]
    # 2 is more accurate but short of the goal; 1 and 3 tie: the faster wins
    assert best_plan(plans, "finetune")["blocks"] == 3
    assert best_plan([_plan(0, 0.9, 1.5, False), _plan(1, 0.5, 1.7, False)])["blocks"] == 1
    with pytest.raises(ValueError, match="no depth plan"):
        best_plan([])
    by_macs = [_plan(0, 0.9, 2.0) | {"macs": 10}, _plan(1, 0.1, 2.0) | {"macs": 30},
               _plan(2, 0.5, 1.5, reached=False) | {"macs": 90}]
    assert best_plan(by_macs)["blocks"] == 1 and best_plan(by_macs, "finetune")["blocks"] == 0  # macs: default
    with pytest.raises(ConfigError, match=r"unknown depth plan judge 'loss'.*finetune, macs"):
        best_plan(plans, "loss")


def _toy(split: str, n: int, seed: int) -> ArrayDataset:
    rng = np.random.default_rng(seed)
    return ArrayDataset("toy", split, rng.integers(0, 256, (n, *SHAPE), dtype=np.uint8), rng.integers(0, 10, n),
                        tuple("abcdefghij"), "generated", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def _search(model: nn.Module, state: Path, *, images: int = 64, judge: str = "finetune") -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(16, *SHAPE, generator=g), torch.randint(0, 10, (16,), generator=g))]
    tune = dataclasses.replace(default_finetune(), batch_size=32, threads=1, warmup_epochs=0.0)
    return search_depth(model, SHAPE, C.LatencyPruneConfig(speedup=1.3, rounds=1, repeats=3, layer_steps=False),
                        C.DepthPruneConfig(blocks=2, criterion="branch_norm"), batches=batches,
                        train_ds=_toy("train", 96, 0), val_ds=_toy("val", 32, 1), finetune=tune, images=images,
                        state_path=state, judge=judge)


def test_every_count_is_pruned_to_the_goal_scored_and_the_best_chosen(monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Path) -> None:
    monkeypatch.setattr(_latency_prune, "measure_interleaved", _FixedCostMachine())
    torch.manual_seed(0)
    model = build(default_spec("resnet20", width_mult=0.5)).eval()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    out = _search(model, tmp_path / "plans.json")
    plans = out["plans"]
    assert [p["blocks"] for p in plans] == [0, 1, 2]  # depth.blocks=2 caps the counts tried
    assert len(out["order"]) == 2 and all(p["removed"] == out["order"][:p["blocks"]] for p in plans)
    assert all(p["reached"] and p["speedup"] >= 1.3 for p in plans)
    assert all(0.0 <= p["val_accuracy"] <= 1.0 and p["val_loss"] > 0 for p in plans)
    # plans with fewer blocks need more channel cuts for the same goal
    assert plans[0]["channel_rounds"] >= 1 and plans[0]["macs"] < plans[2]["macs"]
    assert out["chosen"] == best_plan(plans, "finetune")["blocks"]
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())  # the model is untouched
    assert json.loads((tmp_path / "plans.json").read_text())["plans"] == plans
    json.dumps(out)


def test_a_killed_search_resumes_with_the_next_plan_and_other_settings_start_over(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(_latency_prune, "measure_interleaved", _FixedCostMachine())
    torch.manual_seed(0)
    model = build(default_spec("resnet20", width_mult=0.5)).eval()
    real, calls = C.prune_to_latency, [0]

    def dies_on_the_third(*a: Any, **kw: Any) -> Any:
        calls[0] += 1
        if calls[0] == 3:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(C, "prune_to_latency", dies_on_the_third)
    state = tmp_path / "plans.json"
    with pytest.raises(KeyboardInterrupt):
        _search(model, state)
    kept = json.loads(state.read_text())["plans"]
    assert [p["blocks"] for p in kept] == [0, 1]
    out = _search(model, state)  # resumes: only the last plan is pruned and scored
    assert calls[0] == 4 and out["plans"][:2] == kept and out["plans"][2]["blocks"] == 2
    _search(model, state, images=48)  # other settings: every plan again
    assert calls[0] == 7 and json.loads(state.read_text())["key"]["images"] == 48


def test_the_macs_judge_trains_nothing_and_keeps_the_biggest_plan_at_the_goal(monkeypatch: pytest.MonkeyPatch,
                                                                             tmp_path: Path) -> None:
    from devicefit import train as T

    monkeypatch.setattr(_latency_prune, "measure_interleaved", _FixedCostMachine())

    def no_training(*a: Any, **kw: Any) -> Any:
        raise AssertionError("the macs judge must not train")

    monkeypatch.setattr(T, "fit", no_training)
    torch.manual_seed(0)
    out = _search(build(default_spec("resnet20", width_mult=0.5)).eval(), tmp_path / "plans.json", judge="macs")
    plans = out["plans"]
    assert [p["blocks"] for p in plans] == [0, 1, 2] and all(p["val_accuracy"] is None for p in plans)
    assert out["chosen"] == max((p for p in plans if p["reached"]), key=lambda p: p["macs"])["blocks"]
    assert out["judge"] == "macs" and "most MACs" in out["method"]


def test_depth_search_settings_that_cannot_apply_are_refused() -> None:
    base = {"source": "x", "run_dir": "y", "method": "prune", "depth_search": True}
    with pytest.raises(ConfigError, match="needs method='prune', speedup or latency_ms"):
        CompressJobConfig(**base)
    with pytest.raises(ConfigError, match="'finetune' fine-tunes every plan: it needs no_finetune=false"):
        CompressJobConfig(**base, speedup=2.0, no_finetune=True, depth_search_judge="finetune")
    assert CompressJobConfig(**base, speedup=2.0, no_finetune=True).depth_search_judge == "macs"  # trains nothing
    with pytest.raises(ConfigError, match="depth_search_images"):
        CompressJobConfig(**base, speedup=2.0, depth_search_images=0)
    with pytest.raises(ConfigError, match="unknown depth plan judge 'loss'"):
        CompressJobConfig(**base, speedup=2.0, depth_search_judge="loss")
    with pytest.raises(ConfigError, match="depth_search must be a bool"):
        CompressJobConfig(**{**base, "depth_search": "yes"}, speedup=2.0)


def test_prune_command_with_drop_blocks_auto_prunes_the_chosen_plan(
        make_source_run: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    import devicefit.cli._cmd_compress  # noqa: F401  (registers prune until _app imports it)
    from devicefit.cli import main

    monkeypatch.setattr(_latency_prune, "measure_interleaved", _FixedCostMachine())
    source = make_source_run("resnet20", width_mult=0.5)
    argv = ["--json", "prune", str(source), "--run-dir", str(tmp_path / "a"), "--drop-blocks", "auto",
            "--speedup", "1.15", "--block-criterion", "branch_norm", "--epochs", "1",
            "--set", "depth_search_images=64", "--set", "depth.blocks=1", "--set", "finetune.batch_size=64",
            "--set", "latency_repeats=3", "--set", "latency_rounds=1"]
    assert main(argv) == 0
    m = json.loads(capsys.readouterr().out)
    search = m["details"]["depth_search"]
    assert [p["blocks"] for p in search["plans"]] == [0, 1]
    chosen = search["chosen"]
    assert search["judge"] == "macs" and all(p["val_accuracy"] is None for p in search["plans"])  # the default
    assert chosen == best_plan(search["plans"])["blocks"]
    # the job drops the chosen plan's blocks (the same greedy order) and then prunes channels to the goal
    assert m["details"].get("blocks", {"removed": []})["removed"] == search["order"][:chosen]
    assert m["details"]["reached"] and m["after"]["macs"] < m["before"]["macs"]
    record = json.loads((tmp_path / "a" / "compress.json").read_text())
    assert record["config"]["depth_search"] is True and (tmp_path / "a" / "depth_plans.json").exists()
    with pytest.raises(SystemExit):
        main(["prune", str(source), "--run-dir", str(tmp_path / "b"), "--drop-blocks", "some"])
    assert "expected a number of blocks (0 or more) or 'auto', got 'some'" in capsys.readouterr().err
