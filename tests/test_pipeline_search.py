"""The search stage of `devicefit run`: budgets become search constraints, the supernet search and channel
scaling stay within them, the better of the searched and the zoo model (by validation accuracy) goes on to
the later stages, the report shows both, and a killed search resumes without re-scoring finished trials."""

from __future__ import annotations

import json

import pytest

from devicefit.core import ConfigError
from devicefit.pipelines import load_recipe, run_recipe
from devicefit.pipelines._search_cost import fit_latency_model, sample_specs
from devicefit.space import get_space

RECIPE = """
name = "search-test"
targets = ["cortex-m4-256k", "host-ort"]
stages = ["zoo", "search", "compress", "verify", "report"]

[budgets.host-ort]
latency_ms = 50.0

[budgets.cortex-m4-256k]
peak_sram_bytes = "48KiB"
flash_bytes = "160KiB"

[data]
name = "fsdd"

[zoo]
train_top = 1
latency_repeats = 5
candidates = [{ name = "dscnn", params = { channels = 16 } }]

[search]
trials = 6
supernet_epochs = 1
latency_samples = 4
bn_batches = 1
options = { init = 3, stage_trials = 2, elite = 2, parents = 2, min_size = 10 }

[compress]
calibration_samples = 64

[train]
epochs = 1
batch_size = 64
warmup_epochs = 0.0
threads = 1
"""


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    base = tmp_path_factory.mktemp("search")
    path = base / "recipe.toml"
    path.write_text(RECIPE)
    summary = run_recipe(load_recipe(path), progress=False, run_dir=base / "out")
    record = json.loads((base / "out" / "stages" / "search.json").read_text())
    return base, path, summary, record


@pytest.mark.slow
def test_search_stage_stays_within_the_budgets(searched):
    _, _, _, record = searched
    m = record["metrics"]
    limits = {c["name"]: c["limit"] for c in m["search"]["constraints"]}
    assert set(limits) == {"cortex-m4-256k:peak_sram_bytes", "cortex-m4-256k:flash_bytes", "host-ort:latency_ms"}
    assert limits["host-ort:latency_ms"] == pytest.approx(50.0 * 0.85)  # searched against the margin
    assert m["search"]["n_evaluated"] == 6
    for e in m["search"]["evaluated"]:  # the screen admits only candidates estimated to fit
        assert all(e["metrics"][k] <= v for k, v in limits.items()), e
        assert 0.0 <= e["metrics"]["accuracy"] <= 1.0
    assert all(m["chosen_estimates"][k] <= v for k, v in limits.items())
    for step in m["channel_scaling"]:
        assert step["cost"] <= 1.0
    lm = m["latency_models"][0]
    assert lm["target"] == "host-ort" and lm["precision"] == "int8" and len(lm["samples"]) == 4
    assert len(lm["loo_rel_error"]) == 4


@pytest.mark.slow
def test_better_model_by_validation_goes_on(searched):
    base, _, summary, record = searched
    m = record["metrics"]
    cmp = m["comparison"]
    search_wins = cmp["search"]["val_accuracy"] > cmp["zoo"]["val_accuracy"]
    assert (m["selected"] == "search") is search_wins
    assert m["retrain"]["spec"]["family"] == "resnet_cifar"
    compress = json.loads((base / "out" / "stages" / "compress.json").read_text())
    src = json.loads((base / "out" / compress["metrics"]["onnx"]).parent.joinpath("compress.json").read_text())
    assert src["config"]["source"].endswith(m["selected_run_dir"])
    assert summary["final"]["spec"] == m["selected_spec"]
    page = (base / "out" / "report.html").read_text()
    assert "Searched vs zoo model" in page and "Architecture search" in page
    assert "latency model (int8, 4 measured architectures" in page


@pytest.mark.slow
def test_killed_search_resumes_without_rescoring(searched, monkeypatch):
    base, path, _, _ = searched
    from devicefit.pipelines import _stage_search

    out = base / "out"
    (out / "stages" / "search.json").unlink()
    calls = []
    real = _stage_search._SubnetScorer.__call__

    def counting(self, spec):
        if spec.to_json() not in self.cache:
            calls.append(spec)
        return real(self, spec)

    monkeypatch.setattr(_stage_search._SubnetScorer, "__call__", counting)
    # two more trials: the study continues (6 stored), the supernet and latency samples are reused
    run_recipe(load_recipe(path, ["search.trials=8"]), progress=False, run_dir=out)
    record = json.loads((out / "stages" / "search.json").read_text())
    assert record["metrics"]["search"]["n_evaluated"] == 8
    new_trials = {e["spec"]["params"].__repr__() for e in record["metrics"]["search"]["evaluated"][6:]}
    assert len(calls) <= len(new_trials) + 8  # only the new trials and the channel-scaling moves are scored


def test_search_recipe_errors_name_the_key(tmp_path):
    path = tmp_path / "recipe.toml"
    path.write_text(RECIPE)
    with pytest.raises(ConfigError, match=r"search\.space"):
        load_recipe(path, ['search.space="nb201"'])
    with pytest.raises(ConfigError, match=r"search\.latency_margin"):
        load_recipe(path, ["search.latency_margin=1.5"])
    with pytest.raises(ConfigError, match="hsconas"):
        load_recipe(path, ["search.options={popsize = 3}"])
    with pytest.raises(ConfigError, match="unknown"):
        load_recipe(path, ['search.method="gridsearch"'])
    with pytest.raises(ConfigError, match=r"search\.path_sampling must be one of sandwich, uniform, got 'zig'"):
        load_recipe(path, ['search.path_sampling="zig"'])
    with pytest.raises(ConfigError, match=r"search\.n_random"):
        load_recipe(path, ["search.n_random=0"])
    assert load_recipe(path, ['search.path_sampling="sandwich"']).search.path_sampling == "sandwich"


def test_latency_model_fits_a_linear_cost_and_reports_leave_one_out_error():
    space = get_space("resnet_cifar")
    specs = sample_specs(space, 8, seed=0)
    assert specs[0] == space.smallest() and specs[1] == space.largest() and len(set(specs)) == 8
    rows = []
    for s in specs:
        c = space.analytic_cost(s, num_classes=10, input_shape=(3, 32, 32))
        rows.append({"macs": c["macs"], "params": c["params"], "latency_ms": 2e-8 * c["macs"] + 0.05})
    lm = fit_latency_model("host-ort", "int8", rows)
    assert lm.coef[0] == pytest.approx(2e-8, rel=1e-6) and lm.coef[2] == pytest.approx(0.05, rel=1e-4)
    assert max(abs(e) for e in lm.loo_rel_error) < 1e-6
    with pytest.raises(ConfigError, match="at least 4"):
        fit_latency_model("host-ort", "int8", rows[:3])


def test_latency_samples_refit_until_no_outlier_so_a_rerun_measures_nothing(tmp_path, monkeypatch):
    """Single-session figures the fit misses by > 30% are re-measured over 3 sessions and the fit is redone
    until none is left; a second build on the same samples file then measures nothing more (CI once caught
    a rerun re-measuring a sample that became an outlier only after the first refit)."""
    from types import SimpleNamespace

    from devicefit.core import read_jsonl
    from devicefit.pipelines import _search_cost as sc

    space = get_space("mbconv")
    specs = sample_specs(space, 8, 0)
    cost = {s.to_json(): space.analytic_cost(s, num_classes=10, input_shape=(3, 32, 32)) for s in specs}
    # specs[1]: a burst of load; specs[3] is off by 29.8% under the fit that figure drags, by 30.1% without it
    spoiled = {specs[1].to_json(): 4.0, specs[3].to_json(): 0.735}
    calls: list[tuple[str, int]] = []

    def fake(space_, spec, target, precision, *, sessions=1, **kw):
        calls.append((spec.to_json(), sessions))
        true_ms = 1e-7 * cost[spec.to_json()]["macs"] + 3e-7 * cost[spec.to_json()]["params"] + 0.2
        return {"latency_ms": true_ms * (spoiled.get(spec.to_json(), 1.0) if sessions == 1 else 1.0),
                "cv": 0.01, "sessions": sessions}

    monkeypatch.setattr(sc, "measure_spec_latency", fake)
    path, target = tmp_path / "lat.jsonl", SimpleNamespace(name="host-ort")
    kw = dict(num_classes=10, input_shape=(3, 32, 32), repeats=3, log=lambda m: None)
    lm = sc._measured_latency_model(path, space, target, "fp32", 8, 0, **kw)
    assert [j for j, n in calls if n == 3] == list(spoiled)  # in turn: the second shows after the first refit
    rows = read_jsonl(path)
    assert len(rows) == 10 and all(abs(lm.predict(r["macs"], r["params"]) / r["latency_ms"] - 1) <= 0.3
                                   for r in rows[-8:] if r["spec_json"] not in spoiled)
    calls.clear()
    again = sc._measured_latency_model(path, space, target, "fp32", 8, 0, **kw)
    assert calls == [] and len(read_jsonl(path)) == 10
    assert again.to_dict() == lm.to_dict()
