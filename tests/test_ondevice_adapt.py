"""Adaptation end to end: the budgeted selector, the adapt job and `devicefit finetune` (alias `adapt`) on
held-out FSDD speakers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from devicefit.cli import main
from devicefit.cli._cmd_adapt import parse_memory_budget
from devicefit.core import BudgetError, ConfigError, DataError, NotFittedError, read_json, sha256_file
from devicefit.data import ArrayDataset, load_fsdd
from devicefit.models import build, default_spec
from devicefit.pipelines import DataConfig, ModelConfig, TrainJobConfig, run_train_job
from devicefit.pipelines._adapt_job import AdaptJobConfig, run_adapt_job, split_new_data
from devicefit.train import BudgetedSelector, SchemeConfig, TrainConfig, adapt, check_adaptation_data, evaluate

SPEAKER_SPLIT = {"split_by": "speaker", "test_speakers": ["lucas"]}
TINY = {"channels": 16, "num_blocks": 1}
ADAPT_TRAIN = TrainConfig(epochs=1, batch_size=16, optimizer="sgd", lr=0.02, momentum=0.9, warmup_epochs=0.0,
                          weight_decay=0.0, label_smoothing=0.0, threads=1)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny DS-CNN trained for 2 epochs on five FSDD speakers (lucas held out)."""
    run_dir = tmp_path_factory.mktemp("ondevice") / "base"
    cfg = TrainJobConfig(data=DataConfig("fsdd", val_fraction=0.0, options=SPEAKER_SPLIT),
                         model=ModelConfig("dscnn", TINY), run_dir=str(run_dir),
                         train=TrainConfig(epochs=2, batch_size=64, optimizer="adamw", lr=3e-3, threads=1))
    run_train_job(cfg, progress=False)
    return run_dir


@pytest.fixture(scope="module")
def speaker_data() -> tuple[ArrayDataset, ArrayDataset]:
    new = load_fsdd("test", split_by="speaker", test_speakers=("lucas",))
    return split_new_data(new, 0.2, seed=0)


def _base_model(base_run: Path) -> torch.nn.Module:
    from devicefit.core import ArchSpec
    from devicefit.train import load_weights

    spec = ArchSpec.from_dict(read_json(base_run / "spec.json"))
    return load_weights(build(spec), base_run / "model.pt").eval()


def test_split_new_data_is_stratified_disjoint_and_seeded(speaker_data) -> None:
    adapt_ds, heldout = speaker_data
    assert len(adapt_ds) == 100 and len(heldout) == 400
    assert np.bincount(adapt_ds.y, minlength=10).tolist() == [10] * 10
    again, _ = split_new_data(load_fsdd("test", split_by="speaker", test_speakers=("lucas",)), 0.2, seed=0)
    assert np.array_equal(again.x, adapt_ds.x)
    assert not {tuple(r) for r in adapt_ds.x.reshape(100, -1)[:, :4].tolist()} & \
        {tuple(r) for r in heldout.x.reshape(400, -1)[:, :4].tolist()}


def test_adapt_learns_on_the_new_speaker_and_leaves_the_model(base_run, speaker_data) -> None:
    model = _base_model(base_run)
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    adapt_ds, _ = speaker_data
    cfg = TrainConfig(**{**ADAPT_TRAIN.__dict__, "epochs": 3})
    adapted, result = adapt(model, adapt_ds, SchemeConfig("full"), cfg, input_shape=(1, 49, 10), num_classes=10)
    assert evaluate(adapted, adapt_ds)["loss"] < evaluate(model, adapt_ds)["loss"]  # it fitted the new speaker
    assert all(torch.equal(before_state[k], v) for k, v in model.state_dict().items())
    assert result.memory.batch_size == 16 and result.train.history[-1].epoch == 3


def test_selector_fits_the_budget_and_refuses_below_the_smallest_update(base_run, speaker_data) -> None:
    model = _base_model(base_run)
    adapt_ds, _ = speaker_data
    probe_ds, val_ds = split_new_data(adapt_ds, 0.7, seed=0)
    sel = BudgetedSelector(48 * 1024, ADAPT_TRAIN, ratios=(1.0, 0.5))
    with pytest.raises(NotFittedError, match="scheme_"):
        _ = sel.scheme_
    sel.fit(model, probe_ds, val_ds, input_shape=(1, 49, 10), num_classes=10)
    assert sel.scheme_.name == "sparse" and sel.memory_.budget_bytes <= 48 * 1024
    assert len(sel.candidates_) == 3 + 4 * 2  # bias depths 1, 2, 4 + four layers × two ratios
    assert all(c.cost_bytes >= sel.minimal_bytes_ for c in sel.candidates_)
    fitting = [c.gain for c in sel.candidates_ if c.cost_bytes <= 48 * 1024]
    assert sel.gain_ >= max(fitting)  # the merged plan is kept only if it measures at least as well
    small = BudgetedSelector(sel.minimal_bytes_ - 1, ADAPT_TRAIN)
    with pytest.raises(BudgetError, match=rf"smallest feasible update .*: {sel.minimal_bytes_} bytes"):
        small.fit(model, probe_ds, val_ds, input_shape=(1, 49, 10), num_classes=10)
    with pytest.raises(ConfigError, match="budget_bytes"):
        BudgetedSelector(0, ADAPT_TRAIN).fit(model, probe_ds, val_ds, input_shape=(1, 49, 10), num_classes=10)


def test_bad_new_data_is_named() -> None:
    ds = ArrayDataset("toy", "test", np.zeros((4, 1, 49, 10), np.float32), np.array([0, 1, 11, 12]),
                      tuple(str(i) for i in range(13)), "toy", (0.0,), (1.0,))
    with pytest.raises(DataError, match=r"labels \[11, 12\] are classes the network has never seen"):
        check_adaptation_data((1, 49, 10), 10, ds)
    with pytest.raises(DataError, match=r"shape \(1, 49, 10\), the network expects \(3, 32, 32\)"):
        check_adaptation_data((3, 32, 32), 10, ds)


def test_adapt_job_writes_its_own_run_and_never_touches_the_source(base_run, tmp_path) -> None:
    hashes = {p.name: sha256_file(p) for p in base_run.iterdir() if p.is_file() and p.suffix != ".txt"}
    cfg = AdaptJobConfig(source_run=str(base_run), scheme="bias", budget_kib=256, train=ADAPT_TRAIN,
                         run_dir=str(tmp_path / "adapted"))
    m = run_adapt_job(cfg)
    assert m["n_adapt"] == 100 and m["n_heldout"] == 400 and not m["cached"]
    assert 0 <= m["accuracy_before"] <= 1 and 0 <= m["accuracy_after"] <= 1
    assert m["memory"]["budget_bytes"] <= 256 * 1024 and m["scheme"]["name"] == "bias"
    assert (tmp_path / "adapted" / "model.pt").is_file() and (tmp_path / "adapted" / "adapt.json").is_file()
    assert run_adapt_job(cfg)["cached"]
    assert hashes == {p.name: sha256_file(p) for p in base_run.iterdir() if p.is_file() and p.suffix != ".txt"}


def test_adapt_job_errors(base_run, tmp_path) -> None:
    with pytest.raises(BudgetError, match=r"scheme 'full' needs .* bytes .* over budget_kib 1"):
        run_adapt_job(AdaptJobConfig(source_run=str(base_run), scheme="full", budget_kib=1, train=ADAPT_TRAIN,
                                     run_dir=str(tmp_path / "a")))
    with pytest.raises(ConfigError, match="needs budget_kib"):
        AdaptJobConfig(source_run=str(base_run), scheme="auto")
    with pytest.raises(ConfigError, match=r"not a finished train run: config\.json is missing"):
        run_adapt_job(AdaptJobConfig(source_run=str(tmp_path), scheme="bias"))
    wrong = tmp_path / "wrong"
    shutil.copytree(base_run, wrong)
    spec = read_json(wrong / "spec.json")
    spec["params"]["channels"] = 24
    (wrong / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(ConfigError, match="does not fit this model"):
        run_adapt_job(AdaptJobConfig(source_run=str(wrong), scheme="bias", run_dir=str(tmp_path / "b")))
    with pytest.raises(DataError, match="the network expects"):
        run_adapt_job(AdaptJobConfig(source_run=str(base_run), scheme="bias", data=DataConfig("mnist"),
                                     run_dir=str(tmp_path / "c")))


def test_cli_finetune_within_budget(base_run, tmp_path, capsys) -> None:
    out = tmp_path / "cli"
    code = main(["--json", "finetune", str(base_run), "--scheme", "sparse", "--memory-budget", "256KiB", "--out",
                 str(out), "--set", "layers=[-1, -2]", "--set", "channel_ratio=0.5", "--set", "train.epochs=1",
                 "--set", "train.batch_size=16"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["scheme"]["layers"] == [-1, -2] and result["memory"]["budget_bytes"] <= 256 * 1024
    assert (out / "adapt.json").is_file() and (out / "model.pt").is_file()
    # `adapt` is kept as an alias; a budget below every scheme names the smallest feasible one
    assert main(["adapt", str(base_run), "--scheme", "auto", "--budget-kib", "0.001", "--out",
                 str(tmp_path / "x")]) != 0
    assert "smallest feasible" in capsys.readouterr().err
    assert main(["finetune", str(base_run), "--memory-budget", "lots", "--out", str(tmp_path / "y")]) != 0
    assert "--memory-budget" in capsys.readouterr().err


def test_memory_budget_sizes() -> None:
    assert parse_memory_budget("256KiB") == 256 and parse_memory_budget("1.5 MiB") == 1536
    assert parse_memory_budget("262144") == 256 and parse_memory_budget("300kB") == 300_000 / 1024
    for bad in ("", "0KiB", "-1", "12 parsecs"):
        with pytest.raises(ConfigError, match="memory-budget"):
            parse_memory_budget(bad)


def test_default_spec_of_the_tiny_base_matches(base_run) -> None:
    spec = read_json(base_run / "spec.json")
    assert spec["params"]["channels"] == 16 and default_spec("dscnn", **TINY).family == "dscnn"
