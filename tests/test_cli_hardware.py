"""Hardware commands: targets, predictor fit/eval/predict on the bundled tables, and the profile job."""

from __future__ import annotations

import json

import numpy as np
import pytest

from devicefit.cli import main
from devicefit.core import ConfigError
from devicefit.pipelines import ProfileJobConfig, latency_samples, run_profile_job

PROFILE = ["--space", "nb201", "--n", "16", "--threads", "1", "--set", "repeats=3", "--set", "warmup=1",
           "--set", "rounds=1", "--set", 'build={C = 4, N = 1}', "--set", 'predictors=["lut", "gbdt", "transfer"]']


def run_json(capsys, *argv: str) -> dict:
    assert main(["--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_targets_ls_and_show(capsys):
    names = {t["name"] for t in run_json(capsys, "targets", "ls")["targets"]}
    assert {"host-ort", "host-torch", "cortex-m4-256k", "cortex-m7-512k", "nb201-pixel2", "fbnet-raspi4"} <= names
    m4 = run_json(capsys, "targets", "show", "cortex-m4-256k")["target"]
    assert m4["peak_sram_bytes"] == 256 * 1024 and m4["flash_bytes"] == 1024 * 1024
    assert main(["targets", "show", "cortex-m4"]) == 2
    assert "cortex-m4-256k" in capsys.readouterr().err  # the error suggests the close match


def test_predictor_fit_eval_predict_on_a_table_device(tmp_path, capsys):
    path = tmp_path / "lut.json"
    fit = run_json(capsys, "predictor", "fit", "--target", "nb201-gold-6226", "--kind", "lut", "--n", "100",
                   "--out", str(path))
    assert fit["n_train"] == 100 and fit["metrics"]["spearman"] > 0.8 and path.is_file()
    ev = run_json(capsys, "predictor", "eval", str(path), "--target", "nb201-gold-6226")
    assert ev["metrics"]["n"] == 600 and ev["metrics"]["within_10"] > 0.5
    ops = ",".join(["nor_conv_3x3"] * 6)
    big = run_json(capsys, "predictor", "predict", str(path), "--ops", ops)["latency_ms"]
    small = run_json(capsys, "predictor", "predict", str(path), "--ops", ",".join(["skip_connect"] * 6))["latency_ms"]
    assert big > small > 0
    assert main(["predictor", "predict", str(path), "--ops", "conv,conv"]) == 2
    assert "expected 6 ops" in capsys.readouterr().err


def test_predictor_fit_rejects_a_non_table_target_and_bad_n(tmp_path, capsys):
    assert main(["predictor", "fit", "--target", "host-ort", "--out", str(tmp_path / "p.json")]) == 2
    assert "not a table device" in capsys.readouterr().err
    assert main(["predictor", "fit", "--target", "nb201-pixel2", "--n", "600", "--out", str(tmp_path / "p.json")]) == 2
    assert "--n must be in" in capsys.readouterr().err
    assert not (tmp_path / "p.json").exists()


@pytest.mark.slow
def test_profile_measures_fits_and_resumes_without_remeasuring(tmp_path, capsys):
    run_dir = tmp_path / "prof"
    out = run_json(capsys, "profile", *PROFILE, "--passes", "2", "--set", "reference_every=10",
                   "--run-dir", str(run_dir))
    assert out["n_measured"] == 16 and out["n_test"] + out["n_train"] == 16
    assert set(out["predictors"]) == {"lut", "gbdt", "transfer"}
    assert out["latency_ms"]["min"] > 0
    lines = (run_dir / "measurements.jsonl").read_text().splitlines()
    rows = [json.loads(x) for x in lines]
    assert len(rows) == 32 and all(r["method"]["threads"] == 1 for r in rows)
    assert sorted(r["pass"] for r in rows) == [0] * 16 + [1] * 16
    # the reference net is re-measured at 0, 10, 20, 30 and after the last figure: its spread is reported
    refs = [json.loads(x) for x in (run_dir / "reference.jsonl").read_text().splitlines()]
    assert [r["after"] for r in refs] == [0, 10, 20, 30, 32]
    rep = out["repeatability"]
    assert rep["n"] == 5 and rep["max_over_min"] >= 1 and rep["cv"] >= 0
    assert out["pass_spread"]["median"] >= 0
    for kind in ("lut", "gbdt", "transfer"):
        assert (run_dir / "predictors" / f"{kind}.json").is_file()
    # A kill mid-write leaves a torn last line: it is dropped and only that figure is re-measured.
    torn = [*lines[:-1], lines[-1][: len(lines[-1]) // 2]]
    (run_dir / "measurements.jsonl").write_text("\n".join(torn))
    (run_dir / "profile.json").unlink()
    again = run_json(capsys, "profile", *PROFILE, "--passes", "2", "--set", "reference_every=10",
                     "--run-dir", str(run_dir))
    assert again["n_measured"] == 16
    specs, y, family, _ = latency_samples(measurements=str(run_dir))
    assert family == "nb201" and len(specs) == 16 and (y > 0).all()
    # the figure of an architecture is the median of its passes
    by_spec: dict[str, list[float]] = {}
    for line in (run_dir / "measurements.jsonl").read_text().splitlines():
        r = json.loads(line)
        by_spec.setdefault(json.dumps(r["spec"], sort_keys=True), []).append(r["latency_ms"])
    expect = {k: float(np.median(v)) for k, v in by_spec.items()}
    got = {json.dumps(s.to_dict(), sort_keys=True): v for s, v in zip(specs, y, strict=True)}
    assert got == pytest.approx(expect)
    log = (run_dir / "log.txt").read_text()
    assert "31 of 32 figures (16 architectures × 2 pass(es)) already measured; measuring 1" in log


def test_profile_rejects_non_host_targets_and_tiny_n(tmp_path):
    with pytest.raises(ConfigError, match="host target"):
        run_profile_job(ProfileJobConfig(target="cortex-m4-256k", run_dir=str(tmp_path / "x")), progress=False)
    with pytest.raises(ConfigError, match="raise n"):
        ProfileJobConfig(n=5)
