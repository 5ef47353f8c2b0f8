"""fit/evaluate/checkpoints: learning, determinism, resume after a kill, mismatches, KD, weight files."""

from __future__ import annotations

import copy
import io
import logging

import numpy as np
import pytest
import torch
from torch import nn

from devicefit.core import ConfigError, DataError, RunRecord
from devicefit.data import ArrayDataset
from devicefit.train import (
    TrainConfig,
    build_optimizer,
    evaluate,
    fit,
    load_checkpoint,
    load_weights,
    predict_logits,
    save_weights,
)

NUM_CLASSES = 4


def quadrant_dataset(n: int, seed: int, split: str = "train") -> ArrayDataset:
    """8×8 RGB noise images; class k has a bright quadrant k (linearly separable)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, NUM_CLASSES, n)
    x = rng.integers(0, 90, (n, 3, 8, 8)).astype(np.uint8)
    for i, k in enumerate(y):
        r, c = divmod(int(k), 2)
        x[i, :, r * 4:(r + 1) * 4, c * 4:(c + 1) * 4] += 140
    return ArrayDataset(name="quadrants", split=split, x=x, y=y.astype(np.int64),
                        classes=tuple("abcd"), source="generated", mean=(0.4,) * 3, std=(0.3,) * 3)


def tiny_net(seed: int = 0, *, bn: bool = True, dropout: float = 0.0, hidden: int = 8) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Conv2d(3, hidden, 3, padding=1, bias=not bn)]
    layers += [nn.BatchNorm2d(hidden)] if bn else []
    layers += [nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(dropout), nn.Linear(hidden * 16, NUM_CLASSES)]
    return nn.Sequential(*layers)


def cfg_for(**changes) -> TrainConfig:
    base = {"epochs": 3, "batch_size": 32, "lr": 0.05, "warmup_epochs": 0.5, "augment": "crop_flip",
            "eval_batch_size": 64}
    return TrainConfig(**{**base, **changes})


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def max_abs_change(a: nn.Module, b: nn.Module) -> float:
    sb = b.state_dict()
    return max((v - sb[k]).abs().max().item() for k, v in a.state_dict().items())


def strip_timing(history) -> list[dict]:
    return [{k: v for k, v in h.to_dict().items() if k not in ("seconds", "images_per_s")} for h in history]


@pytest.fixture(scope="module")
def train_ds() -> ArrayDataset:
    return quadrant_dataset(256, seed=1)


@pytest.fixture(scope="module")
def val_ds() -> ArrayDataset:
    return quadrant_dataset(128, seed=2, split="test")


def kill_at(epoch: int, batch: int):
    def on_batch(e: int, i: int, loss: float) -> None:
        if (e, i) == (epoch, batch):
            raise KeyboardInterrupt

    return on_batch


def test_fit_learns_separable_data(train_ds, val_ds):
    model, lines = tiny_net(), []
    result = fit(model, train_ds, cfg_for(epochs=4, augment="none"), val_ds=val_ds, progress=False,
                 log=lines.append)
    h = result.history
    assert [s.epoch for s in h] == [1, 2, 3, 4]
    assert h[-1].train_loss < 0.7 * h[0].train_loss
    assert h[-1].val_acc >= 0.95
    assert result.final["val_acc"] == h[-1].val_acc
    assert evaluate(model, val_ds)["accuracy"] == pytest.approx(h[-1].val_acc)
    assert h[-1].lr < h[1].lr < 0.05 + 1e-12  # cosine decays after warm-up
    assert all(s.images_per_s > 0 and s.seconds > 0 for s in h)
    assert result.train_seconds == pytest.approx(sum(s.seconds for s in h))
    assert len(lines) == 4 and lines[0].startswith("epoch 1/4 train_loss")
    assert not model.training
    d = result.to_dict()
    assert d["final"]["epochs"] == 4 and len(d["history"]) == 4


def test_same_seed_gives_identical_weights_and_other_seed_differs(train_ds):
    runs = []
    for seed in (0, 0, 1):
        model = tiny_net(dropout=0.2)
        fit(model, train_ds, cfg_for(epochs=2, seed=seed), progress=False)
        runs.append(model)
    assert_same_weights(runs[0], runs[1])
    assert not torch.equal(runs[0][-1].weight, runs[2][-1].weight)


def test_resume_after_kill_equals_uninterrupted_run(train_ds, val_ds, tmp_path):
    cfg = cfg_for(epochs=3)
    straight = tiny_net(dropout=0.2)
    expected = fit(straight, train_ds, cfg, val_ds=val_ds, run_dir=tmp_path / "a", progress=False)

    killed_dir = tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_net(dropout=0.2), train_ds, cfg, val_ds=val_ds, run_dir=killed_dir, progress=False,
            on_batch=kill_at(epoch=3, batch=2))
    assert load_checkpoint(killed_dir / "checkpoint.pt")["epoch"] == 2
    assert sorted(p.name for p in killed_dir.iterdir()) == ["checkpoint.pt"]

    resumed_model = tiny_net(seed=5, dropout=0.2)  # different init: the checkpoint must win
    resumed = fit(resumed_model, train_ds, cfg, val_ds=val_ds, run_dir=killed_dir, progress=False)
    assert resumed.resumed_from_epoch == 2
    assert_same_weights(straight, resumed_model)
    assert strip_timing(resumed.history) == strip_timing(expected.history)
    assert_same_weights(load_weights(tiny_net(seed=9, dropout=0.2), killed_dir / "model.pt"), straight)
    record = RunRecord.load(killed_dir / "train.json")
    assert record.artefacts["model"] == "model.pt" and record.metrics["final"]["epochs"] == 3


def test_kill_from_epoch_log_callback_resumes_from_previous_checkpoint(train_ds, tmp_path):
    cfg = cfg_for(epochs=3, augment="crop")
    straight = tiny_net()
    fit(straight, train_ds, cfg, progress=False)

    def log(line: str) -> None:  # raises after epoch 2 ends, before its checkpoint is written
        if line.startswith("epoch 2/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(tiny_net(), train_ds, cfg, run_dir=tmp_path, progress=False, log=log)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1
    model = tiny_net()
    assert fit(model, train_ds, cfg, run_dir=tmp_path, progress=False).resumed_from_epoch == 1
    assert_same_weights(straight, model)


def test_interrupted_checkpoint_write_keeps_last_good_checkpoint(train_ds, tmp_path, monkeypatch):
    cfg = cfg_for(epochs=2)
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_net(), train_ds, cfg, run_dir=tmp_path, progress=False, on_batch=kill_at(2, 0))
    good = (tmp_path / "checkpoint.pt").read_bytes()
    real_save = torch.save

    def half_save(obj, f):  # write a torn file, then die
        buf = io.BytesIO()
        real_save(obj, buf)
        f.write(buf.getvalue()[:100])
        raise KeyboardInterrupt

    monkeypatch.setattr("devicefit.train._checkpoint.torch.save", half_save)
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_net(), train_ds, cfg, run_dir=tmp_path, progress=False)
    assert (tmp_path / "checkpoint.pt").read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # temp file removed


def test_completed_run_returns_stored_result_without_training(train_ds, tmp_path, caplog):
    cfg = cfg_for(epochs=2)
    trained = tiny_net()
    with caplog.at_level(logging.INFO, logger="devicefit.test"):
        first = fit(trained, train_ds, cfg, run_dir=tmp_path, log=logging.getLogger("devicefit.test"))
    assert [r.getMessage()[:9] for r in caplog.records] == ["epoch 1/2", "epoch 2/2"]
    model = tiny_net(seed=3)
    again = fit(model, train_ds, cfg, run_dir=tmp_path, progress=False, on_batch=kill_at(1, 0))
    assert again.resumed_from_epoch == 2 and again.history == first.history
    assert_same_weights(model, trained)


def test_mismatched_checkpoint_raises_config_error_and_keeps_file(train_ds, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_net(), train_ds, cfg_for(epochs=2), run_dir=tmp_path, progress=False, on_batch=kill_at(2, 0))
    before = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(ConfigError, match=r"lr: 0\.05 in checkpoint, 0\.1 now"):
        fit(tiny_net(), train_ds, cfg_for(epochs=2, lr=0.1), run_dir=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="resolved_augment"):
        fit(tiny_net(), train_ds, cfg_for(epochs=2, augment="auto"), run_dir=tmp_path, progress=False)
    with pytest.raises(ConfigError, match=r"0\.weight: \(8, 3, 3, 3\) in file, \(16, 3, 3, 3\) in model"):
        fit(tiny_net(hidden=16), train_ds, cfg_for(epochs=2), run_dir=tmp_path, progress=False)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    # operational fields may change on resume
    fit(tiny_net(), train_ds, cfg_for(epochs=2, threads=1), run_dir=tmp_path, progress=False)


def test_distillation_uses_the_teacher(train_ds):
    cfg = cfg_for(epochs=1, distill_alpha=1.0, weight_decay=0.0)
    student = tiny_net(bn=False)
    teacher = copy.deepcopy(student)
    start = copy.deepcopy(student)
    result = fit(student, train_ds, cfg, teacher=teacher, progress=False)
    assert result.history[0].train_loss == pytest.approx(0.0, abs=1e-7)
    # identical teacher: the KL gradient is zero up to float rounding, so weights barely move
    assert max_abs_change(student, start) < 1e-6

    other_teacher = tiny_net(seed=7, bn=False)
    frozen = copy.deepcopy(other_teacher)
    result = fit(student, train_ds, cfg, teacher=other_teacher, progress=False)
    assert result.history[0].train_loss > 1e-3
    assert max_abs_change(student, start) > 1e-3
    assert_same_weights(other_teacher, frozen)


def test_weight_files_are_weights_only_and_checked(tmp_path):
    model = tiny_net()
    path = save_weights(model, tmp_path / "w.pt")
    state = torch.load(path, weights_only=True)
    assert set(state) == set(model.state_dict())
    assert_same_weights(load_weights(tiny_net(seed=4), path), model)
    with pytest.raises(ConfigError, match=r"0\.weight: \(8, 3, 3, 3\) in file, \(16, 3, 3, 3\) in model"):
        load_weights(tiny_net(hidden=16), path)
    with pytest.raises(ConfigError, match=r"missing 1\.weight"):
        load_weights(tiny_net(bn=True), save_weights(tiny_net(bn=False), tmp_path / "nobn.pt"))
    torch.save({"cfg": TrainConfig()}, tmp_path / "pickled.pt")  # an arbitrary object: refused
    with pytest.raises(DataError, match="weights-only"):
        load_weights(model, tmp_path / "pickled.pt")


def test_checkpoint_loads_with_plain_weights_only_torch_load(train_ds, tmp_path):
    fit(tiny_net(dropout=0.1), train_ds, cfg_for(epochs=1), run_dir=tmp_path, progress=False)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["config"]["batch_size"] == 32
    assert isinstance(ckpt["rng"]["torch"], torch.Tensor) and isinstance(ckpt["rng"]["loader"], torch.Tensor)


def test_evaluate_and_predict_logits(train_ds, val_ds):
    model = tiny_net()
    fit(model, train_ds, cfg_for(epochs=2, augment="none"), progress=False)
    model.train()
    out = evaluate(model, val_ds, batch_size=50, confusion=True)
    cm = np.array(out["confusion"])
    assert model.training  # mode restored
    assert out["n"] == 128 and cm.sum() == 128 and cm.shape == (4, 4)
    assert out["accuracy"] == pytest.approx(np.trace(cm) / 128)
    assert np.array_equal(cm.sum(axis=1), np.bincount(val_ds.y, minlength=4))
    logits = predict_logits(model, val_ds, batch_size=50)
    assert logits.shape == (128, 4)
    assert (logits.argmax(1).numpy() == val_ds.y).mean() == pytest.approx(out["accuracy"])
    expected_loss = nn.functional.cross_entropy(logits, torch.from_numpy(val_ds.y)).item()
    assert out["loss"] == pytest.approx(expected_loss, rel=1e-5)


def test_weight_decay_skips_norm_and_bias_parameters():
    model = tiny_net()
    groups = build_optimizer(model, cfg_for(weight_decay=1e-3)).param_groups
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(model[0].weight), id(model[-1].weight)}
    assert isinstance(build_optimizer(model, cfg_for(optimizer="adamw")), torch.optim.AdamW)


def test_fit_validates_inputs(train_ds):
    with pytest.raises(ConfigError, match="augment_default"):
        fit(tiny_net(), train_ds, cfg_for(augment="auto"), augment_default="bogus", progress=False)
    three_class = ArrayDataset(name="q", split="test", x=train_ds.x[:8], y=train_ds.y[:8] % 3,
                               classes=("a", "b", "c"), source="generated", mean=(0.4,) * 3, std=(0.3,) * 3)
    with pytest.raises(DataError, match="val_ds"):
        fit(tiny_net(), train_ds, cfg_for(), val_ds=three_class, progress=False)
    with pytest.raises(ConfigError, match="diverged"):
        fit(tiny_net(bn=False), train_ds, cfg_for(epochs=1, lr=1e30, warmup_epochs=0.0), progress=False)
