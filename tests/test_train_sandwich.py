"""fit_supernet's path samplings: the sandwich rule (largest + smallest + random paths, in-place distillation)
beside uniform single-path sampling, on a tiny MBConv supernet; and `fit`'s `path_plan` contract."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from devicefit.core import ConfigError
from devicefit.data import to_float_tensor
from devicefit.nn._losses import distillation_loss
from devicefit.train import TrainConfig, evaluate, fit
from devicefit.train._distributed import PATH_SAMPLINGS, fit_supernet, state_digest
from test_train_distributed import LinearSupernet, make_data, make_model

CFG = TrainConfig(epochs=3, batch_size=16, lr=0.2, warmup_epochs=0.0, threads=1, weight_decay=1e-4,
                  label_smoothing=0.0)


def _recording(model: torch.nn.Module) -> list:
    """Patch `model.set_active` to record every activated spec (in order); return the record."""
    seen: list = []
    original = model.set_active

    def set_active(spec):  # type: ignore[no-untyped-def]
        seen.append(spec)
        return original(spec)

    model.set_active = set_active  # type: ignore[method-assign]
    return seen


def _assert_one_sgd_step(model: torch.nn.Module, expected: torch.nn.Module, lr: float) -> None:
    """Apply plain SGD (`lr`) with the gradients accumulated in `expected`, then check that `model`, trained by
    `fit` from the same start, holds the same weights and that the step moved something."""
    with torch.no_grad():
        for p in expected.parameters():
            if p.grad is not None:
                p -= lr * p.grad
    got, want, start = model.state_dict(), expected.state_dict(), make_model("bn").state_dict()
    assert any(want[k].is_floating_point() and not torch.equal(want[k], start[k]) for k in want), "no step"
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-5, msg=f"parameter {k}")


@pytest.mark.parametrize("name", PATH_SAMPLINGS.names())
def test_every_path_sampling_trains_the_tiny_supernet(name: str) -> None:
    model = make_model("bn")
    result = fit_supernet(model, make_data(), CFG, progress=False, seed_paths=3, path_sampling=name)
    losses = [h.train_loss for h in result.history]
    assert losses[-1] < losses[0] * 0.8, losses
    model.set_active(model.space.largest())  # the widest path learnt the colours
    assert evaluate(model, make_data(64), batch_size=64)["accuracy"] > 0.9


def test_sandwich_runs_largest_smallest_then_the_seeded_random_paths(tmp_path: Path) -> None:
    model = make_model("bn")
    seen = _recording(model)
    cfg = TrainConfig(epochs=1, batch_size=16, threads=1, warmup_epochs=0.0)
    fit_supernet(model, make_data(64), cfg, progress=False, seed_paths=5, path_sampling="sandwich", n_random=2)
    space = model.space
    assert len(seen) == 4 * 4  # 64 images / 16 per batch, four paths each
    for batch in range(4):
        rng = np.random.default_rng([5, 1, batch])
        expected = [space.largest(), space.smallest(), space.sample(rng), space.sample(rng)]
        assert seen[4 * batch: 4 * batch + 4] == expected


def test_a_sandwich_step_averages_the_paths_and_distils_from_the_largest() -> None:
    """One SGD step (no momentum, decay or schedule) moves the weights by lr × the mean over paths of: the
    largest path's cross-entropy, and every other path's distillation loss against the largest one's outputs."""
    cfg = TrainConfig(epochs=1, batch_size=16, lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.0,
                      schedule="constant", warmup_epochs=0.0, label_smoothing=0.0, augment="none", threads=1)
    data = make_data(16)
    model = make_model("bn")
    expected = copy.deepcopy(model)
    fit_supernet(model, data, cfg, progress=False, seed_paths=2, path_sampling="sandwich", n_random=1)

    space = expected.space
    specs = [space.largest(), space.smallest(), space.sample(np.random.default_rng([2, 1, 0]))]
    x = to_float_tensor(data, data.x)
    y = torch.from_numpy(data.y)
    expected.train()
    first = None
    for spec in specs:
        expected.set_active(spec)
        logits = expected(x)
        if first is None:
            loss, first = F.cross_entropy(logits, y), logits.detach()
        else:
            loss = distillation_loss(logits, first, y, alpha=cfg.distill_alpha, temperature=cfg.distill_temperature)
        (loss / len(specs)).backward()
    _assert_one_sgd_step(model, expected, cfg.lr)


def test_a_teacher_runs_once_per_batch_whatever_the_number_of_paths() -> None:
    """Three paths per step without in-place distillation: each path distils from the teacher, whose outputs are
    computed once per batch; one SGD step equals the mean over paths of the distillation losses."""
    cfg = TrainConfig(epochs=1, batch_size=16, lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.0,
                      schedule="constant", warmup_epochs=0.0, label_smoothing=0.0, augment="none", threads=1)
    data = make_data(16)
    teacher = make_model("bn")
    teacher.set_active(teacher.space.largest())
    calls: list[int] = []
    teacher.register_forward_hook(lambda *_: calls.append(1))
    model, expected = make_model("bn"), make_model("bn")
    specs = [model.space.largest(), model.space.smallest(), model.space.largest()]
    fit(model, data, cfg, progress=False, teacher=teacher,
        path_plan=lambda epoch, batch: [lambda s=s: model.set_active(s) for s in specs])
    assert len(calls) == 1  # one batch, one teacher pass for its three paths

    x, y = to_float_tensor(data, data.x), torch.from_numpy(data.y)
    with torch.no_grad():
        target = teacher.eval()(x)
    expected.train()
    for spec in specs:
        expected.set_active(spec)
        loss = distillation_loss(expected(x), target, y, alpha=cfg.distill_alpha, temperature=cfg.distill_temperature)
        (loss / len(specs)).backward()
    _assert_one_sgd_step(model, expected, cfg.lr)


def test_a_killed_sandwich_run_resumes_to_the_uninterrupted_weights(tmp_path: Path) -> None:
    whole = make_model("bn")
    fit_supernet(whole, make_data(), CFG, run_dir=tmp_path / "whole", progress=False, path_sampling="sandwich")

    def kill(epoch: int, batch: int, loss: float) -> None:
        if epoch == 2 and batch == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit_supernet(make_model("bn"), make_data(), CFG, run_dir=tmp_path / "killed", progress=False,
                     path_sampling="sandwich", on_batch=kill)
    resumed = make_model("bn")
    result = fit_supernet(resumed, make_data(), CFG, run_dir=tmp_path / "killed", progress=False,
                          path_sampling="sandwich")
    assert result.resumed_from_epoch == 1
    assert state_digest(resumed) == state_digest(whole)
    with pytest.raises(ConfigError, match="path_sampling: 'sandwich' in checkpoint"):  # not a uniform run's file
        fit_supernet(make_model("bn"), make_data(), CFG, run_dir=tmp_path / "killed", progress=False)


def test_bad_path_sampling_arguments_are_named() -> None:
    with pytest.raises(ConfigError, match="unknown path sampling 'zigzag'; known: sandwich, uniform"):
        fit_supernet(make_model("bn"), make_data(16), CFG, progress=False, path_sampling="zigzag")
    with pytest.raises(ConfigError, match="n_random"):
        fit_supernet(make_model("bn"), make_data(16), CFG, progress=False, path_sampling="sandwich", n_random=0)
    with pytest.raises(ConfigError, match="largest\\(\\) and smallest\\(\\)"):
        fit_supernet(LinearSupernet(), make_data(16), CFG, progress=False, path_sampling="sandwich")
    model = make_model("bn")
    with pytest.raises(ConfigError, match="either before_batch or path_plan"):
        fit(model, make_data(16), CFG, progress=False, before_batch=lambda e, b: None, path_plan=lambda e, b: [])
    with pytest.raises(ConfigError, match="inplace_distill needs a path_plan"):
        fit(model, make_data(16), CFG, progress=False, inplace_distill=True)
