"""Depth pruning: residual blocks replaced by their exact bypass, chosen greedily by every registered criterion,
the result reloadable from its state dict, and the prune job's `depth` settings end to end."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from devicefit import compress as C
from devicefit.core import ConfigError, UnsupportedOpError
from devicefit.models import build, default_spec
from devicefit.nn import analyze
from devicefit.pipelines._compress_job import CompressJobConfig, load_source, run_compress_job

SHAPE = (3, 32, 32)


def _resnet20(width_mult: float = 0.5) -> nn.Module:
    torch.manual_seed(0)
    return build(default_spec("resnet20", width_mult=width_mult)).eval()


def _batches(n: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(16, *SHAPE, generator=g), torch.randint(0, 10, (16,), generator=g)) for _ in range(n)]


def _silence(block: nn.Module) -> None:
    """Zero the last BN of a block's branch, so its branch outputs zero and its bypass is exact."""
    bn = [m for m in block.modules() if isinstance(m, nn.BatchNorm2d)]
    last = bn[-2] if type(block).__name__ == "BasicBlock" and block.shortcut is not None else bn[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()


def test_removable_blocks_are_the_identity_shortcut_blocks() -> None:
    net = _resnet20()
    # stem, then stages of 3 blocks; the first block of stages 2 and 3 projects (stride 2), so it stays
    assert C.removable_blocks(net) == [f"features.{i}" for i in (1, 2, 3, 5, 6, 8, 9)]
    mb = build(default_spec("mobilenet_v2")).eval()
    found = C.removable_blocks(mb)
    assert found and all(mb.get_submodule(p).use_residual for p in found)
    assert all(type(mb.get_submodule(p)).__name__ == "InvertedResidual" for p in found)


@pytest.mark.parametrize("model", ["resnet20", "mobilenet_v2"])
def test_bypass_is_exact_when_the_branch_is_zero(model: str) -> None:
    torch.manual_seed(0)
    net = build(default_spec(model)).eval()
    path = C.removable_blocks(net)[1]
    _silence(net.get_submodule(path))
    x = torch.randn(2, *SHAPE)
    slim = C.bypass_blocks(net, [path])
    assert torch.allclose(slim(x), net(x), atol=1e-5)
    assert analyze(slim, SHAPE).macs < analyze(net, SHAPE).macs
    assert C.removable_blocks(net)[1] == path  # the input model is untouched


def test_bypass_of_a_projecting_block_names_it_and_the_removable_ones() -> None:
    with pytest.raises(ConfigError, match=r"'features.4' is not a removable.*features.1, features.2"):
        C.bypass_blocks(_resnet20(), ["features.4"])
    with pytest.raises(ConfigError, match=r"'features\.99'"):
        C.bypass_blocks(_resnet20(), ["features.99"])


@pytest.mark.parametrize("criterion", C.BLOCK_CRITERIA.names())
def test_every_criterion_removes_the_silent_block_first(criterion: str) -> None:
    net = _resnet20()
    _silence(net.get_submodule("features.5"))
    batches = _batches()
    scores = C.block_scores(net, batches, criterion)
    assert set(scores) == set(C.removable_blocks(net))
    pruner = C.DepthPruner(C.DepthPruneConfig(blocks=3, criterion=criterion)).fit(net, SHAPE, batches=batches)
    if criterion == "branch_norm":  # a silent branch moves nothing: the lowest possible score
        assert scores["features.5"] == pytest.approx(0.0, abs=1e-6)
        assert pruner.removed_[0] == "features.5"
    else:  # bypassing a silent block leaves the loss exactly as it was
        with torch.no_grad():
            base = sum(float(nn.functional.cross_entropy(net(x), y, reduction="sum")) for x, y in batches) / 32
        assert scores["features.5"] == pytest.approx(base, rel=1e-5)
    # greedy: each round removes that round's lowest score, and the spared last block of each stage never goes
    for removed, round_scores in zip(pruner.removed_, pruner.scores_, strict=True):
        assert removed == min(round_scores, key=round_scores.__getitem__)
        assert not {"features.3", "features.6", "features.9"} & set(round_scores)
    res = pruner.result_
    assert len(set(pruner.removed_)) == 3 and res.macs_after < res.macs_before and res.params_after < res.params_before
    assert set(C.removable_blocks(res.model)) == set(C.removable_blocks(net)) - set(pruner.removed_)
    report = pruner.report()
    assert report["removed"] == pruner.removed_ and report["macs_ratio"] > 1.0
    json.dumps(report)


@pytest.mark.parametrize("criterion", C.BLOCK_CRITERIA.names())
def test_scoring_leaves_the_model_as_it_was_even_when_a_forward_pass_fails(criterion: str) -> None:
    net, batches, x = _resnet20(), _batches(), torch.randn(2, *SHAPE)
    modules, before = [id(m) for m in net.modules()], net(x)
    scores = C.block_scores(net, batches, criterion)
    assert [id(m) for m in net.modules()] == modules and torch.equal(net(x), before)
    if criterion == "loss":  # the in-place swap scores exactly what a bypassed copy would
        for path in ("features.1", "features.8"):
            assert scores[path] == pytest.approx(C.mean_loss(C.bypass_blocks(net, [path]), batches), rel=1e-6)
    with pytest.raises(RuntimeError):  # wrong channel count: the forward pass fails mid-score
        C.block_scores(net, [(torch.randn(2, 5, 32, 32), torch.zeros(2, dtype=torch.long))], criterion)
    assert [id(m) for m in net.modules()] == modules and torch.equal(net(x), before)


def test_too_many_blocks_and_bad_settings_are_clear_errors() -> None:
    with pytest.raises(UnsupportedOpError, match=r"4 removable residual block\(s\) with keep_per_stage"):
        C.DepthPruner(C.DepthPruneConfig(blocks=5)).fit(_resnet20(), SHAPE, batches=_batches(1))
    full = C.DepthPruner(C.DepthPruneConfig(blocks=7, keep_per_stage=False)).fit(_resnet20(), SHAPE,
                                                                               batches=_batches(1))
    assert C.removable_blocks(full.result_.model) == []
    with pytest.raises(ConfigError, match="blocks"):
        C.DepthPruneConfig(blocks=-1)
    with pytest.raises(ConfigError, match="unknown block criterion 'gradient'"):
        C.DepthPruneConfig(criterion="gradient")
    with pytest.raises(ConfigError, match="batch"):
        C.block_scores(_resnet20(), [])


def test_depth_and_channel_pruned_weights_reload_into_a_fresh_model() -> None:
    net = _resnet20()
    slim = C.DepthPruner(C.DepthPruneConfig(blocks=2, criterion="branch_norm")).fit(
        net, SHAPE, batches=_batches(1)).result_.model
    thin = C.StructuredPruner(C.PruneConfig(ratio=0.5, round_to=4)).fit(slim, SHAPE).result_.model
    fresh = C.load_pruned_state_(_resnet20(), thin.state_dict()).eval()
    x = torch.randn(2, *SHAPE)
    assert torch.allclose(fresh(x), thin(x), atol=1e-5)
    assert analyze(fresh, SHAPE).macs == analyze(thin, SHAPE).macs


@pytest.fixture(scope="module")
def source(make_source_run: Callable[..., Path]) -> Path:
    """A 'trained' run directory: spec.json + model.pt of a narrow ResNet-20 (random weights)."""
    return make_source_run("resnet20", width_mult=0.5)


def test_prune_job_drops_blocks_records_them_and_the_run_reloads(source: Path, tmp_path: Path) -> None:
    cfg = CompressJobConfig(source=str(source), method="prune", run_dir=str(tmp_path / "d"), no_finetune=True,
                            depth=C.DepthPruneConfig(blocks=2, criterion="branch_norm"), channel_pruning=False,
                            latency_repeats=5, latency_rounds=1)
    m = run_compress_job(cfg)
    blocks = m["details"]["blocks"]
    assert len(blocks["removed"]) == 2 and blocks["criterion"] == "branch_norm"
    assert m["after"]["macs"] == blocks["macs_after"] < m["before"]["macs"]
    reloaded = load_source(CompressJobConfig(source=str(tmp_path / "d"), run_dir="unused")).model
    assert sum(p.numel() for p in reloaded.parameters()) == m["after"]["params"]
    assert set(C.removable_blocks(reloaded)).isdisjoint(blocks["removed"])
    # with channel pruning after the blocks, the network is thinner still
    depth = C.DepthPruneConfig(blocks=2, criterion="branch_norm")
    both = run_compress_job(CompressJobConfig(source=str(source), method="prune", run_dir=str(tmp_path / "b"),
                                              no_finetune=True, depth=depth, latency_repeats=5, latency_rounds=1))
    assert both["after"]["macs"] < m["after"]["macs"]
    assert both["details"]["blocks"]["removed"] == blocks["removed"]


def test_prune_job_refuses_depth_settings_that_cannot_apply(source: Path) -> None:
    with pytest.raises(ConfigError, match="method='prune'"):
        CompressJobConfig(source=str(source), method="quantize", run_dir="x", depth=C.DepthPruneConfig(blocks=1))
    with pytest.raises(ConfigError, match="leaves nothing to prune"):
        CompressJobConfig(source=str(source), method="prune", run_dir="x", channel_pruning=False)
    with pytest.raises(ConfigError, match="blocks"):
        C.DepthPruneConfig(blocks=-1)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # few repeats on a shared CPU: spread warnings expected
def test_latency_driven_pruning_starts_from_a_depth_pruned_network_and_times_it_against_the_model() -> None:
    net = _resnet20()
    slim = C.bypass_blocks(net, ["features.1", "features.2", "features.5"])
    cfg = C.LatencyPruneConfig(speedup=50.0, max_steps=0, rounds=1, repeats=3)
    out, record = C.prune_to_latency(net, SHAPE, cfg, start=slim)
    assert out is slim and len(record["history"]) == 1 and record["reached"] is False
    first = record["history"][0]
    assert first["macs"] == analyze(slim, SHAPE).macs < analyze(net, SHAPE).macs
    assert set(first["rounds_ms"]) == {"unpruned", "pruned"} and first["speedup"] > 0


def test_prune_command_takes_the_depth_options(source: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import devicefit.cli._cmd_compress  # noqa: F401  (registers prune until _app imports it)
    from devicefit.cli import main

    argv = ["--json", "prune", str(source), "--run-dir", str(tmp_path / "c"), "--drop-blocks", "1", "--no-channels",
            "--block-criterion", "branch_norm", "--set", "no_finetune=true", "--set", "latency_repeats=5",
            "--set", "latency_rounds=1"]
    assert main(argv) == 0
    m = json.loads(capsys.readouterr().out)
    record = json.loads((tmp_path / "c" / "compress.json").read_text())
    assert record["config"]["depth"]["blocks"] == 1 and record["config"]["channel_pruning"] is False
    assert len(m["details"]["blocks"]["removed"]) == 1 and m["after"]["macs"] < m["before"]["macs"]
    assert "round_to" in m["details"] and "history" not in m["details"]  # no channel pruning ran


@pytest.mark.parametrize("criterion", C.BLOCK_CRITERIA.names())
def test_block_scores_for_chosen_paths_equal_the_full_scoring(criterion: str) -> None:
    net, batches = _resnet20(), _batches(1)
    full = C.block_scores(net, batches, criterion)
    some = C.block_scores(net, batches, criterion, paths=["features.8", "features.2"])
    assert list(some) == ["features.8", "features.2"]
    assert some == {p: pytest.approx(full[p], rel=1e-6) for p in some}
    assert C.block_scores(net, batches, criterion, paths=[]) == {}
    with pytest.raises(ConfigError, match=r"paths: features\.0, head not removable .*removable: features\.1"):
        C.block_scores(net, batches, criterion, paths=["features.0", "head", "features.1"])


def test_greedy_removal_scores_only_the_blocks_it_may_remove(monkeypatch: pytest.MonkeyPatch) -> None:
    net, scored = _resnet20(), []
    allowed = C.droppable_blocks(net, keep_per_stage=True)
    real = C.BLOCK_CRITERIA.get("loss")

    def counting(model: nn.Module, path: str, batches: list) -> float:
        scored.append(path)
        return real(model, path, batches)

    monkeypatch.setitem(C.BLOCK_CRITERIA._items, "loss", counting)
    pruner = C.DepthPruner(C.DepthPruneConfig(blocks=2)).fit(net, SHAPE, batches=_batches(1))
    assert set(scored) <= set(allowed) and len(scored) == 2 * len(allowed) - 1
    assert all(set(r) <= set(allowed) for r in pruner.scores_)
