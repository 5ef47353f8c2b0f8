"""`devicefit run`: recipe validation, stages run in order and are reused when unchanged, budgets are
verified, and the report is rebuilt from the run directory without torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devicefit import data
from devicefit.cli import main
from devicefit.core import ConfigError, DataError
from devicefit.pipelines import STAGES, load_recipe, run_recipe

RECIPE = """
name = "kws-test"
targets = ["cortex-m4-256k", "host-ort"]
stages = ["zoo", "compress", "deploy", "verify", "report"]

[budgets.host-ort]
latency_ms = 50.0

[budgets.cortex-m4-256k]
peak_sram_bytes = "64KiB"

[data]
name = "fsdd"

[zoo]
train_top = 1
latency_repeats = 5
candidates = [
  { name = "dscnn", params = { channels = 16 } },
  { name = "mobilenet_v2", params = { width_mult = 1.0 } },
]

[deploy]
verify_samples = 16

[train]
epochs = 3
batch_size = 64
warmup_epochs = 0.0
threads = 1
"""


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("run")
    path = base / "recipe.toml"
    path.write_text(RECIPE)
    recipe = load_recipe(path)
    summary = run_recipe(recipe, progress=False, run_dir=base / "out")
    return base, path, summary


@pytest.mark.parametrize(("override", "message"), [
    ("zoo.train_topp=2", "zoo.train_topp"),
    ("zoo.train_top=0", "zoo.train_top must be"),
    ('targets=["cortex-m4-265k"]', "cortex-m4-265k"),
    ('budgets={host-ort = {latency_ms = -1}}', "latency_ms"),
    ('budgets={cortex-m7-512k = {latency_ms = 1}}', "not in targets"),
    ('stages=["zoo", "deploy-c"]', "unknown stage 'deploy-c'"),
    ('train.epochs="two"', "train.epochs"),
])
def test_bad_recipes_fail_before_any_work_naming_the_key(tmp_path, override, message):
    path = tmp_path / "recipe.toml"
    path.write_text(RECIPE)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_recipe(path, [override])


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "configs" / "recipes").glob("*.toml")),
                         ids=lambda p: p.stem)
def test_shipped_recipes_are_valid(path):
    recipe = load_recipe(path)
    assert recipe.name == path.stem and recipe.stages[-1] == "report"


def test_every_default_stage_is_registered():
    recipe = load_recipe(None)
    for name in recipe.stages:
        assert STAGES.get(name).name == name


@pytest.mark.slow
def test_run_verifies_budgets_and_writes_records_and_report(finished_run):
    base, _, summary = finished_run
    out = base / "out"
    zoo = json.loads((out / "stages" / "zoo.json").read_text())["metrics"]
    by_name = {c["name"]: c for c in zoo["candidates"]}
    # mobilenet_v2 at width 1.0 needs far more than 64 KiB of int8 activations on 1x49x10 MFCCs: not feasible
    assert by_name["mobilenet_v2"]["peak_activation_bytes_int8"] > 64 * 1024
    assert not by_name["mobilenet_v2"]["feasible"] and "train" not in by_name["mobilenet_v2"]
    assert by_name["dscnn"]["feasible"] and zoo["selected"] == "dscnn"
    assert by_name["dscnn"]["latency"]["host-ort"]["median_ms"] > 0
    comp = json.loads((out / "stages" / "compress.json").read_text())["metrics"]
    assert comp["precision"] == "int8" and comp["runtime_ops"].get("QLinearConv", 0) > 0
    assert abs(comp["test_accuracy"] - comp["fp32_test_accuracy"]) < 0.1
    verify = json.loads((out / "stages" / "verify.json").read_text())["metrics"]
    assert verify["final"]["source"] == "compress" and verify["final"]["onnx"].endswith("model.onnx")
    assert "int8" in verify["targets"]["host-ort"]["methods"]["latency_ms"]
    lines = {(t, x["name"]): x for t, b in verify["budgets"].items() for x in b["lines"]}
    assert lines["cortex-m4-256k", "peak_sram_bytes"]["limit"] == 64 * 1024
    # the microcontroller figures come from the generated, linked and verified C program
    deploy = json.loads((out / "stages" / "deploy.json").read_text())["metrics"]["mcu"]["cortex-m4-256k"]
    assert deploy["host_bit_exact"] and deploy["n_verified"] == 16
    assert [q["core"] for q in deploy["qemu"]] == ["cortex-m4"] and deploy["qemu"][0]["bit_exact"]
    assert deploy["qemu"][0]["instructions_per_inference"] > 0
    assert lines["cortex-m4-256k", "peak_sram_bytes"]["value"] == deploy["ram_bytes"]
    assert lines["cortex-m4-256k", "flash_bytes"]["value"] == deploy["flash_bytes"]
    # the arena holds at least the analytic peak of int8 activations and fits in the linked RAM
    assert by_name["dscnn"]["peak_activation_bytes_int8"] <= deploy["arena"]["arena_bytes"] < deploy["ram_bytes"]
    assert (out / "stages" / "deploy" / "cortex-m4-256k" / "c" / "model.c").is_file()
    assert lines["host-ort", "latency_ms"]["status"] == "met"
    assert summary["all_met"] == all(x["met"] for x in lines.values())
    assert 0.1 < summary["test_accuracy"] <= 1.0  # one epoch on spoken digits: above chance (0.1)
    page = (out / "report.html").read_text()
    assert "devicefit report: kws-test" in page and page.count("data:image/png;base64,") >= 2
    assert "cortex-m4-256k" in (out / "report.md").read_text()
    assert "Microcontroller deployment" in page and "int8 QDQ (ONNX)" in page and "bit-exact on 16 inputs" in page


@pytest.mark.slow
def test_rerun_reuses_every_stage_and_a_budget_change_reuses_the_training(finished_run, capsys):
    base, path, _ = finished_run
    out = base / "out"
    started = time.perf_counter()
    assert main(["--json", "run", str(path), "--run-dir", str(out)]) in (0, 3)
    assert time.perf_counter() - started < 5
    log = (out / "log.txt").read_text()
    assert log.count("zoo: unchanged") == 1 and log.count("report: unchanged") == 1
    capsys.readouterr()
    assert main(["--json", "run", str(path), "--run-dir", str(out), "--set",
                 "budgets.host-ort.latency_ms=0.0001"]) == 3  # a budget no model meets: exit 3
    result = json.loads(capsys.readouterr().out)
    assert result["all_met"] is False
    # feasibility depends on the budgets, so the zoo stage reran, but its training run was reused
    log = (out / "log.txt").read_text()
    assert "dscnn: test accuracy" in log and "epoch 1/3" not in log  # the training log stays in its own run
    (train_dir,) = (out / "stages" / "zoo").iterdir()
    assert (train_dir / "log.txt").read_text().count("epoch 1/3") == 1
    verify = json.loads((out / "stages" / "verify.json").read_text())["metrics"]
    assert verify["budgets"]["host-ort"]["lines"][0]["status"] == "over"


@pytest.mark.slow
def test_report_rebuilds_without_torch(finished_run, tmp_path):
    base, _, _ = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(base / "out", copy)
    (copy / "report.html").unlink()
    code = ("import sys; sys.modules['torch'] = None; sys.modules['onnxruntime'] = None\n"
            "from devicefit.cli import main; raise SystemExit(main(['report', sys.argv[1]]))")
    proc = subprocess.run([sys.executable, "-c", code, str(copy)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "devicefit report: kws-test" in (copy / "report.html").read_text()


def test_report_of_a_folder_that_is_not_a_run_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "config.json is missing" in capsys.readouterr().err


@pytest.mark.slow
def test_run_dir_of_another_job_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"kind": "train", "config": {}}))
    with pytest.raises(ConfigError, match="holds a 'train' job"):
        run_recipe(load_recipe(None), progress=False, run_dir=tmp_path)


@pytest.mark.slow
@pytest.mark.toolchain
def test_report_renders_in_headless_chromium(finished_run, tmp_path):
    base, _, _ = finished_run
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (make test installs the Debian package `chromium`)")
    page = (base / "out" / "report.html").resolve().as_uri()
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files"]
    dom = subprocess.run([*flags, "--dump-dom", page], capture_output=True, text=True, timeout=120).stdout
    assert "devicefit report: kws-test" in dom and "Budgets" in dom and "cortex-m4-256k" in dom
    assert dom.count("<img") >= 2 and "host-ort" in dom
    shot = tmp_path / "report.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1000,1800", page], capture_output=True,
                   timeout=120, check=True)
    from PIL import Image

    with Image.open(shot) as im:  # the page drew something: many distinct colours (plots), not a blank page
        assert im.size == (1000, 1800) and len(im.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50


@pytest.mark.slow
def test_data_dir_from_the_environment_enters_the_fingerprints(finished_run, tmp_path, monkeypatch):
    base, path, _ = finished_run
    copy = tmp_path / "out"
    shutil.copytree(base / "out", copy)
    runs_before = (copy / "log.txt").read_text().count("zoo: running")
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("DEVICEFIT_DATA_DIR", str(empty))
    with pytest.raises(DataError, match="looked in"):  # a missing dataset names where it was looked for
        run_recipe(load_recipe(path), progress=False, run_dir=copy)
    full = tmp_path / "data"
    shutil.copytree(Path(data.__file__).parent / "bundled" / "fsdd", full / "fsdd")
    monkeypatch.setenv("DEVICEFIT_DATA_DIR", str(full))
    run_recipe(load_recipe(path), progress=False, run_dir=copy)
    stored = json.loads((copy / "config.json").read_text())["config"]
    assert stored["data"]["data_dir"] == str(full.resolve())
    # the failed attempt and this one ran the zoo stage again: the new data copy trained in a new folder
    assert (copy / "log.txt").read_text().count("zoo: running") == runs_before + 2
    assert len(list((copy / "stages" / "zoo").iterdir())) == 2
