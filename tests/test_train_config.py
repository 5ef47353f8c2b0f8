"""TrainConfig: defaults, validation naming the field, from_dict key checks, fingerprint."""

from __future__ import annotations

import pytest

from devicefit.core import ConfigError, from_dict, to_dict
from devicefit.train import TrainConfig, lr_factor


def test_defaults_are_valid_and_round_trip():
    cfg = TrainConfig()
    assert (cfg.optimizer, cfg.schedule, cfg.batch_size, cfg.momentum) == ("sgd", "cosine", 128, 0.9)
    assert from_dict(TrainConfig, to_dict(cfg)) == cfg


def test_from_dict_coerces_and_rejects_unknown_keys():
    cfg = from_dict(TrainConfig, {"epochs": 3, "lr": 1, "optimizer": "adamw"})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.optimizer == "adamw"
    with pytest.raises(ConfigError, match="learning_rate"):
        from_dict(TrainConfig, {"learning_rate": 0.1})
    with pytest.raises(ConfigError, match="epochs"):
        from_dict(TrainConfig, {"epochs": "ten"})


@pytest.mark.parametrize(("field", "value"), [
    ("epochs", 0), ("epochs", 2.5), ("batch_size", -1), ("optimizer", "adam"), ("lr", 0.0), ("momentum", 1.0),
    ("weight_decay", -1e-4), ("schedule", "step"), ("warmup_epochs", 100.0), ("warmup_epochs", -1.0),
    ("label_smoothing", 1.0), ("augment", "mixup"), ("seed", -1), ("threads", 0), ("eval_batch_size", 0),
    ("distill_alpha", 1.5), ("distill_temperature", 0.0), ("checkpoint_every_epochs", 0), ("nesterov", "yes"),
    ("deterministic", 1),
])
def test_invalid_values_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: value})
    with pytest.raises(ConfigError, match=field):
        from_dict(TrainConfig, {field: value})


def test_fingerprint_leaves_out_operational_fields():
    fp = TrainConfig(threads=1, checkpoint_every_epochs=5).fingerprint()
    assert "threads" not in fp and "checkpoint_every_epochs" not in fp
    assert fp == TrainConfig().fingerprint()
    assert TrainConfig(lr=0.2).fingerprint()["lr"] == 0.2


def test_lr_factor_warms_up_linearly_then_decays_by_cosine():
    total, warm = 100, 10
    assert [lr_factor(s, total, warm, "cosine") for s in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    assert lr_factor(warm, total, warm, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, total, warm, "cosine") == pytest.approx(0.5)
    assert 0 < lr_factor(total - 1, total, warm, "cosine") < 0.01
    assert lr_factor(total - 1, total, warm, "constant") == 1.0
    assert lr_factor(0, total, 0, "cosine") == 1.0
