"""fit_supernet: uniform single-path supernet training in one process and in two through torchrun (gloo).

Run as a script (`torchrun ... tests/test_train_distributed.py MODE RUN_DIR`) this file is the worker the tests
launch; every process writes `rank<r>.json` (its weights' digest and its TrainResult) into each run dir.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import nn

from devicefit.core import ArchSpec, ConfigError
from devicefit.data import ArrayDataset
from devicefit.space import MBConvSpace, MBConvStage, MBConvSupernet
from devicefit.train import TrainConfig, TrainResult, fit, load_weights
from devicefit.train._distributed import fit_supernet, main, state_digest

EPOCHS, KILL_EPOCH, N = 3, 3, 128
# The linear runs' batches of 15 split 8/7 over two processes: gradients must be weighted by shard size.
CFG = {kind: TrainConfig(epochs=EPOCHS, batch_size=bs, lr=lr, warmup_epochs=0.0, threads=1, weight_decay=1e-4)
       for kind, bs, lr in (("bn", 16, 0.2), ("linear", 15, 0.1))}


class TinyMBConvSpace(MBConvSpace):
    """Two stages of one and two layers on 3×8×8 images: a supernet with BatchNorm and skips."""

    name: ClassVar[str] = "tiny_mbconv_test"
    input_shape: ClassVar[tuple[int, int, int]] = (3, 8, 8)
    stages: ClassVar[tuple[MBConvStage, ...]] = (MBConvStage(8, 1, 1), MBConvStage(8, 2, 2))
    stem_channels: ClassVar[int] = 8
    head_channels: ClassVar[int] = 16


class LinearSupernet(nn.Module):
    """A supernet without BatchNorm: two layers, each one of three linear ops; the path is (i, j)."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.ModuleList(nn.Linear(3 * 8 * 8, 16) for _ in range(3))
        self.second = nn.ModuleList(nn.Linear(16, 16) for _ in range(3))
        self.fc = nn.Linear(16, 4)
        self.active_ = (0, 0)

    def set_active(self, spec: ArchSpec) -> LinearSupernet:
        self.active_ = spec["path"]
        return self

    def sample(self, rng: np.random.Generator) -> ArchSpec:
        spec = ArchSpec("linear_test", {"path": (int(rng.integers(3)), int(rng.integers(3)))})
        self.set_active(spec)
        return spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        i, j = self.active_
        return self.fc(torch.relu(self.second[j](torch.relu(self.first[i](x.flatten(1))))))


def make_model(kind: str) -> nn.Module:
    torch.manual_seed(1)
    if kind == "bn":
        return MBConvSupernet(TinyMBConvSpace(), num_classes=4)
    return LinearSupernet()


def make_data(n: int = N) -> ArrayDataset:
    """Four classes of 3×8×8 uint8 images, each a class colour plus noise (learnable in a few steps)."""
    rng = np.random.default_rng(0)
    y = np.arange(n) % 4
    colours = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]])
    x = colours[y][:, :, None, None] + rng.normal(0, 40, size=(n, 3, 8, 8))
    return ArrayDataset(name="colours", split="train", x=np.clip(x, 0, 255).astype(np.uint8), y=y.astype(np.int64),
                        classes=("r", "g", "b", "y"), source="synthetic", mean=(0.5,) * 3, std=(0.25,) * 3)


# -- the worker (one process of a torchrun launch) -----------------------------------------------------------


def _train_and_report(kind: str, run_dir: Path, *, kill_epoch: int | None = None) -> None:
    def kill(epoch: int, batch: int, loss: float) -> None:
        if epoch == kill_epoch:
            raise SystemExit(3)  # every process stops at the same step, as a killed job would

    model = make_model(kind)
    result = fit_supernet(model, make_data(), CFG[kind], run_dir=run_dir, progress=False, seed_paths=7,
                          on_batch=kill if kill_epoch else None)
    rank = int(os.environ["RANK"])
    (run_dir / f"rank{rank}.json").write_text(json.dumps({"digest": state_digest(model), **result.to_dict()}))


def _worker(mode: str, root: Path) -> None:
    torch.set_num_threads(1)
    if mode == "first":  # a process group the caller set up; fit_supernet must use it and leave it open
        torch.distributed.init_process_group("gloo")
        _train_and_report("bn", root / "bn")
        _train_and_report("linear", root / "linear")
        _train_and_report("bn", root / "killed", kill_epoch=KILL_EPOCH)
    else:  # fit_supernet starts the gloo group itself from torchrun's environment
        _train_and_report("bn", root / "killed")


# -- the tests -----------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _launch(mode: str, root: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), __file__, mode, str(root)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _ranks(run_dir: Path) -> list[dict]:
    return [json.loads((run_dir / f"rank{r}.json").read_text()) for r in range(2)]


def _single_process(kind: str, run_dir: Path) -> tuple[nn.Module, TrainResult]:
    model = make_model(kind)
    return model, fit_supernet(model, make_data(), CFG[kind], run_dir=run_dir, progress=False, seed_paths=7)


def _max_abs_diff(a: nn.Module, b: nn.Module) -> float:
    sb = b.state_dict()
    return max(float((v.double() - sb[k].double()).abs().max()) for k, v in a.state_dict().items())


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> Path:
    """Two torchrun launches of two processes: three runs (the last killed in epoch 3), then a resume."""
    root = tmp_path_factory.mktemp("dist")
    first = _launch("first", root)
    assert first.returncode != 0, "the killed run must end the first launch with a failure"
    assert (root / "linear" / "rank1.json").is_file(), first.stderr[-3000:]  # the first two runs completed
    assert (root / "killed" / "checkpoint.pt").is_file() and not (root / "killed" / "rank0.json").exists()
    second = _launch("resume", root)
    assert second.returncode == 0, second.stderr[-3000:]
    return root


@pytest.mark.slow
def test_two_processes_finish_with_identical_weights_and_learn(launched):
    for kind in ("bn", "linear"):
        ranks = _ranks(launched / kind)
        assert ranks[0]["digest"] == ranks[1]["digest"]
        learnt = [[(h["train_loss"], h["train_acc"], h["lr"]) for h in r["history"]] for r in ranks]
        assert learnt[0] == learnt[1]  # epoch statistics are over the whole data on every rank
        losses = [h["train_loss"] for h in ranks[0]["history"]]
        assert len(losses) == EPOCHS and losses[-1] < losses[0] - 0.1, losses
        assert {p.name for p in (launched / kind).iterdir()} == {"checkpoint.pt", "model.pt", "train.json",
                                                                "rank0.json", "rank1.json"}


@pytest.mark.slow
def test_second_launch_resumes_killed_run_and_matches_uninterrupted(launched):
    killed, full = _ranks(launched / "killed"), _ranks(launched / "bn")
    assert [r["resumed_from_epoch"] for r in killed] == [KILL_EPOCH - 1] * 2  # epochs 1-2 were not retrained
    assert killed[0]["digest"] == killed[1]["digest"] == full[0]["digest"]
    assert [h["train_loss"] for h in killed[0]["history"]] == [h["train_loss"] for h in full[0]["history"]]
    record = json.loads((launched / "killed" / "train.json").read_text())
    assert record["metrics"]["resumed_from_epoch"] == KILL_EPOCH - 1


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(launched, tmp_path):
    # Without BatchNorm the mean loss of a batch is the share-weighted mean of its shards' mean losses (8/15 and
    # 7/15 here), so the summed gradients equal the one-process gradients up to float32 rounding (~1e-7
    # relative per step): measured 1.6e-7 after 27 steps, against 1.9e-2 with shards weighted 1/2 each.
    one, _ = _single_process("linear", tmp_path / "linear")
    two = load_weights(make_model("linear"), launched / "linear" / "model.pt")
    assert _max_abs_diff(one, two) < 1e-5
    # With BatchNorm each process normalises with its own shard's batch statistics (8 examples, not 16):
    # same paths and data, a different trajectory. The first epoch's losses agree (measured 1.15 vs 1.19),
    # both runs learn (measured 1.15 -> 0.40 and 1.19 -> 0.68 over 3 epochs with the OFA-shared supernet;
    # statistics of half batches slow it), and the weights do not match.
    one_bn, result_bn = _single_process("bn", tmp_path / "bn")
    two_losses = [h["train_loss"] for h in _ranks(launched / "bn")[0]["history"]]
    one_losses = [h.train_loss for h in result_bn.history]
    assert abs(one_losses[0] - two_losses[0]) < 0.1, (one_losses, two_losses)
    assert one_losses[-1] < one_losses[0] - 0.25 and two_losses[-1] < two_losses[0] - 0.25, (one_losses, two_losses)
    assert _max_abs_diff(one_bn, load_weights(make_model("bn"), launched / "bn" / "model.pt")) > 1e-5


@pytest.mark.slow
def test_resuming_with_another_process_count_is_refused(launched):
    with pytest.raises(ConfigError, match="world_size"):
        _single_process("bn", launched / "bn")


def test_one_process_is_resumable_and_draws_paths_from_the_seed(tmp_path):
    def run(run_dir: Path | None, **kw) -> tuple[nn.Module, list]:
        model, seen = make_model("linear"), []
        fit_supernet(model, make_data(32), TrainConfig(epochs=2, batch_size=16, threads=1), run_dir=run_dir,
                     progress=False, on_batch=lambda e, i, loss: seen.append(model.active_), **kw)
        return model, seen

    model, paths = run(tmp_path / "a")
    expected = [LinearSupernet().sample(np.random.default_rng([0, e, i])) for e in (1, 2) for i in (0, 1)]
    assert paths == [s["path"] for s in expected]
    _, other = run(None, seed_paths=1)
    assert other != paths
    again, again_paths = run(tmp_path / "a")
    assert again_paths == [] and state_digest(again) == state_digest(model)  # complete: nothing retrained
    with pytest.raises(ConfigError, match="seed_paths"):
        run(tmp_path / "a", seed_paths=1)


class _SilentPeer:
    """The `DataParallel` hooks of a one-process group whose process is not the writer."""

    world_size, is_writer = 1, False

    def shard(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, y

    def sync_grads(self, model: nn.Module, share: float) -> None:
        assert share == 1.0

    def sync_buffers(self, model: nn.Module) -> None:
        pass

    def sum(self, values: list[float]) -> list[float]:
        return list(values)


def test_fit_hooks_leave_training_alone_and_a_non_writer_writes_nothing(tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=16, threads=1)
    plain, hooked, calls = make_model("linear"), make_model("linear"), []
    expected = fit(plain, make_data(32), cfg, progress=False)
    got = fit(hooked, make_data(32), cfg, run_dir=tmp_path, progress=False, parallel=_SilentPeer(),
              before_batch=lambda e, i: calls.append((e, i)))
    assert state_digest(plain) == state_digest(hooked)
    assert [h.train_loss for h in got.history] == [h.train_loss for h in expected.history]
    assert calls == [(1, 0), (1, 1), (2, 0), (2, 1)] and list(tmp_path.iterdir()) == []


def test_fit_supernet_rejects_plain_models_and_tiny_batches():
    with pytest.raises(ConfigError, match="sample"):
        fit_supernet(nn.Linear(2, 2), make_data(8), CFG["linear"], progress=False)
    with pytest.raises(ConfigError, match="batch_size"):
        fit_supernet(make_model("linear"), make_data(8), TrainConfig(epochs=1, batch_size=1), progress=False)


@pytest.mark.slow
def test_main_trains_a_registered_supernet_on_bundled_data(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = ["--space", "mbconv_kws", "--data", "fsdd", "--limit", "24", "--epochs", "1", "--batch-size", "12",
            "--run-dir", str(run_dir)]
    result = main(args)
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["epochs"] == 1 and out["train_loss"] == pytest.approx(result.final["train_loss"])
    assert (run_dir / "model.pt").is_file() and (run_dir / "train.json").is_file()
    with pytest.raises(SystemExit):
        main([*args[:-2], "--run-dir", str(run_dir), "--space", "nope"])


if __name__ == "__main__":
    _worker(sys.argv[1], Path(sys.argv[2]))
