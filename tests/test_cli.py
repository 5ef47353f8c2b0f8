"""The command line: every registered command, config overrides, JSON mode, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from devicefit.cli import COMMANDS, build_parser, main

FAST_TRAIN = ["--data", "fsdd", "--model", "dscnn", "--epochs", "1", "--set", "train.batch_size=256",
              "--set", "model.params.channels=16"]


def run_json(capsys, *argv: str) -> dict:
    assert main(["--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_every_registered_command_has_help():
    parser = build_parser()
    assert set(COMMANDS.names()) >= {"data", "models", "train", "eval", "cost"}
    for name in COMMANDS.names():
        with pytest.raises(SystemExit) as e:
            parser.parse_args([name, "--help"])
        assert e.value.code == 0


def test_python_dash_m_runs():
    out = subprocess.run([sys.executable, "-m", "devicefit", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("devicefit ")


def test_data_ls_lists_registered_datasets(capsys):
    names = {d["name"] for d in run_json(capsys, "data", "ls")["datasets"]}
    assert {"cifar10", "mnist", "fsdd", "imagefolder"} <= names


def test_models_ls_and_cost_agree(capsys):
    models = {m["name"]: m for m in run_json(capsys, "models", "ls")["models"]}
    assert {"mobilenet_v1", "mobilenet_v2", "mcunet", "resnet8", "resnet20", "dscnn"} <= set(models)
    cost = run_json(capsys, "cost", "resnet8")["cost"]
    assert cost["params"] == models["resnet8"]["params"] and cost["macs"] == models["resnet8"]["macs"]


def test_cost_respects_overrides_and_bits(capsys):
    base = run_json(capsys, "cost", "mobilenet_v2", "--weight-bits", "8")["cost"]
    wide = run_json(capsys, "cost", "mobilenet_v2", "--set", "width_mult=0.5", "--weight-bits", "4")["cost"]
    assert wide["params"] > base["params"]
    assert wide["param_bytes"] == (wide["params"] * 4 + 7) // 8
    audio = run_json(capsys, "models", "show", "dscnn", "--input-shape", "1,49,40")
    assert audio["spec"]["params"]["input_shape"] == [1, 49, 40] and len(audio["cost"]["layers"]) > 5


def test_unknown_model_and_bad_flags_exit_2_with_a_named_error(capsys):
    assert main(["cost", "resnet9"]) == 2
    assert "unknown model 'resnet9'" in capsys.readouterr().err
    assert main(["cost", "resnet8", "--input-shape", "3x32x32"]) == 2
    assert "--input-shape" in capsys.readouterr().err
    assert main(["cost", "resnet8", "--set", "widht_mult=2"]) == 2
    assert "widht_mult" in capsys.readouterr().err


def test_train_rejects_unknown_config_key_before_any_work(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", *FAST_TRAIN, "--set", "train.epoch=3", "--run-dir", str(run_dir)]) == 2
    assert "train.epoch" in capsys.readouterr().err
    assert not run_dir.exists()


def test_train_then_eval_then_cached_rerun(tmp_path, capsys):
    run_dir = tmp_path / "run"
    first = run_json(capsys, "train", *FAST_TRAIN, "--run-dir", str(run_dir))
    assert first["cached"] is False and 0.0 <= first["test_accuracy"] <= 1.0
    assert first["n_test"] == 300 and "bundled" in first["data_source"]
    for name in ("config.json", "spec.json", "log.txt", "model.pt", "checkpoint.pt", "job.json", "train.json"):
        assert (run_dir / name).is_file(), name
    again = run_json(capsys, "train", *FAST_TRAIN, "--run-dir", str(run_dir))
    assert again["cached"] is True and again["test_accuracy"] == first["test_accuracy"]
    ev = run_json(capsys, "eval", str(run_dir))
    assert ev["accuracy"] == pytest.approx(first["test_accuracy"]) and ev["n"] == 300
    # A different config pointed at the same run directory is refused, naming the key.
    assert main(["train", *FAST_TRAIN, "--set", "train.lr=0.01", "--run-dir", str(run_dir)]) == 2
    assert "train.lr" in capsys.readouterr().err


def test_config_file_then_set_overrides(tmp_path, capsys):
    cfg = tmp_path / "job.toml"
    cfg.write_text('[data]\nname = "fsdd"\n[model]\nname = "dscnn"\nparams = { channels = 16 }\n'
                   '[train]\nepochs = 5\nbatch_size = 256\n')
    run_dir = tmp_path / "r"
    out = run_json(capsys, "train", "--config", str(cfg), "--set", "train.epochs=1", "--run-dir", str(run_dir))
    stored = json.loads((run_dir / "config.json").read_text())["config"]
    assert stored["train"]["epochs"] == 1 and stored["model"]["params"] == {"channels": 16}
    assert len(out["spec"]["params"]) > 3


def test_eval_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["eval", str(tmp_path)]) == 2
    assert "config.json is missing" in capsys.readouterr().err


def test_data_dir_from_the_environment_is_part_of_the_run_config(tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "run"
    run_json(capsys, "train", *FAST_TRAIN, "--run-dir", str(run_dir))
    (tmp_path / "full-copies").mkdir()
    monkeypatch.setenv("DEVICEFIT_DATA_DIR", str(tmp_path / "full-copies"))
    assert main(["train", *FAST_TRAIN, "--run-dir", str(run_dir)]) == 2  # not the cached bundled-subset result
    assert "data.data_dir" in capsys.readouterr().err
