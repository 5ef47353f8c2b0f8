"""`devicefit deploy`: a train run directory → C project, memory fit, verification, JSON/Markdown report;
a model over the target's budget gives a report (exit 1), not a crash."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

import devicefit.cli._cmd_deploy  # noqa: F401  (registers the command until cli/_app.py imports it)
from devicefit.cli import main
from devicefit.core import ConfigError
from devicefit.pipelines import DataConfig, ModelConfig, TrainJobConfig, run_train_job
from devicefit.pipelines._deploy_job import load_trained_run
from devicefit.train import TrainConfig

# the Makefile's `toolchain` target installs these; without them these tests skip, as it announces
NEEDS_TOOLCHAIN = pytest.mark.skipif(not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
                                     reason="needs gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("deploy") / "run"
    cfg = TrainJobConfig(data=DataConfig("fsdd", options={"features": "mfcc"}),
                         model=ModelConfig("dscnn", {"channels": 16, "num_blocks": 1}),
                         train=TrainConfig(epochs=1, batch_size=64, threads=1), run_dir=str(root))
    run_train_job(cfg, progress=False)
    return root


@pytest.mark.slow
@pytest.mark.toolchain
@NEEDS_TOOLCHAIN
def test_deploy_writes_a_verified_project_and_report(run_dir: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    rc = main(["--json", "deploy", str(run_dir), "--target", "cortex-m4-256k", "--out", str(out), "--n-test", "40",
               "--n-qemu", "2", "--n-calibration", "100"])
    result = json.loads(capsys.readouterr().out)
    assert rc == 0 and result["fits"] is True
    assert sorted(p.name for p in (out / "c").iterdir()) == ["model.c", "model.h"]
    report = json.loads((out / "deploy.json").read_text())
    ver = report["verification"]
    assert ver["host_bit_exact"] and ver["n_test"] == 40
    assert ver["accuracy_c_host"] == ver["accuracy_int8_reference"]
    (qemu,) = ver["qemu"]
    assert qemu["core"] == "cortex-m4" and qemu["bit_exact"] and qemu["instructions_per_inference"] > report["macs"]
    arena = report["arena"]
    assert arena["lower_bound_bytes"] <= arena["arena_bytes"] <= arena["naive_bytes"]
    tflm = ver["tflm"]
    if importlib.util.find_spec("tflite_micro") and importlib.util.find_spec("tflite"):
        assert tflm["mismatched_bytes"] == 0 and tflm["n_inputs"] >= 2 and (out / "model.tflite").exists()
        assert arena["arena_bytes"] < tflm["arena_bytes"]
    else:
        assert "pip install" in tflm["skipped"]
    md = (out / "deploy.md").read_text()
    assert "fits" in md and "instructions / inference" in md and "not cycles or time" in md


@pytest.mark.slow
@pytest.mark.toolchain
@NEEDS_TOOLCHAIN
def test_model_over_budget_gives_a_report_not_a_crash(run_dir: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    targets = tmp_path / "targets"
    targets.mkdir()
    (targets / "tiny.toml").write_text('[[target]]\nname = "tiny-m4"\nkind = "mcu"\nruntime = "c"\n'
                                       'precisions = ["int8"]\npeak_sram_bytes = "8KiB"\nflash_bytes = "2KiB"\n'
                                       'cpu = "cortex-m4"\nqemu_machine = "mps2-an386"\nclock_hz = 64000000\n')
    monkeypatch.setenv("DEVICEFIT_TARGETS", str(targets))
    out = tmp_path / "out"
    rc = main(["-q", "deploy", str(run_dir), "--target", "tiny-m4", "--out", str(out), "--n-test", "8",
               "--n-qemu", "1"])
    report = json.loads((out / "deploy.json").read_text())
    fit = report["memory_fit"]
    assert rc == 1 and not fit["fits"]
    assert fit["missing_flash_bytes"] == fit["flash_bytes"] - 2048 > 0
    assert fit["missing_sram_bytes"] == fit["sram_bytes"] - 8192 > 0  # the 8 KiB stack alone fills it
    assert "does NOT fit" in (out / "deploy.md").read_text()


def test_onnx_and_unfinished_sources_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ONNX input is not supported yet"):
        load_trained_run(tmp_path / "model.onnx")
    with pytest.raises(ConfigError, match=r"config\.json is missing"):
        load_trained_run(tmp_path)
