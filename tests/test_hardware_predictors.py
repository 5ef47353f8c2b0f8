"""Conformance of every registered latency predictor (fit/predict/save/load/errors) on a simulated
additive table, plus what each one promises: `lut` recovers an exactly additive table, `mlp` is
differentiable in a soft one-hot, `transfer` predicts archs outside its source table; and the metrics."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from devicefit.core import ConfigError, NotFittedError
from devicefit.hardware._encoding import NB201
from devicefit.hardware._metrics import evaluate_predictions
from devicefit.hardware._predictors import (
    PREDICTORS,
    LatencyPredictor,
    LUTPredictor,
    MLPPredictor,
    TransferPredictor,
    load_predictor,
)
from devicefit.hardware._tables import LatencyTable, load_latency_table

TARGET = "dev0"


@pytest.fixture(scope="module")
def sim_table() -> LatencyTable:
    """400 NB201 cells on 5 simulated devices: related per-layer tables, 2% multiplicative noise."""
    rng = np.random.default_rng(0)
    codes = rng.choice(5**6, size=400, replace=False)
    specs = [NB201.from_code("".join(str(c // 5**k % 5) for k in range(5, -1, -1))) for c in codes]
    idx = NB201.indices(specs)
    shared = rng.uniform(0.1, 2.0, size=(6, 5))
    lat = {}
    for d in range(5):
        lut = shared * rng.uniform(0.7, 1.3, size=(6, 5))
        clean = 1.0 + lut[np.arange(6)[None, :], idx].sum(axis=1)
        lat[f"dev{d}"] = clean * np.exp(rng.normal(0, 0.02, size=len(specs)))
    return LatencyTable.from_arrays("nb201", specs, lat, source="simulated")


def make(kind: str, table: LatencyTable) -> LatencyPredictor:
    cls = PREDICTORS.get(kind)
    kwargs = {"source": table, "exclude": [TARGET]} if "source" in inspect.signature(cls).parameters else {}
    if kind == "mlp":
        kwargs["epochs"] = 150
    return cls(**kwargs)


def fitted(kind: str, table: LatencyTable) -> tuple[LatencyPredictor, list, np.ndarray]:
    specs, y = list(table.specs), table.column(TARGET)
    model = make(kind, table).fit(specs[:200], y[:200])
    return model, specs[200:], y[200:]


@pytest.mark.parametrize("kind", PREDICTORS.names())
def test_fit_predict_beats_mean(kind: str, sim_table: LatencyTable) -> None:
    model, test, y = fitted(kind, sim_table)
    pred = model.predict(test)
    assert pred.shape == (len(test),) and pred.dtype == np.float64
    assert np.isfinite(pred).all() and (pred > 0).all()
    m = evaluate_predictions(y, pred)
    baseline = evaluate_predictions(y, np.full_like(y, sim_table.column(TARGET)[:200].mean()))
    assert m["spearman"] > 0.8, m
    assert m["within_10"] > baseline["within_10"] + 0.25, (m, baseline)
    assert m["rmse_ms"] < 0.5 * baseline["rmse_ms"]


@pytest.mark.parametrize("kind", PREDICTORS.names())
def test_save_load_round_trip(kind: str, sim_table: LatencyTable, tmp_path: Path) -> None:
    model, test, _ = fitted(kind, sim_table)
    path = model.save(tmp_path / f"{kind}.json")
    doc = json.loads(path.read_text())
    assert doc["kind"] == kind and doc["family"] == "nb201" and doc["format_version"] == 1
    assert "encoding_version" in doc and "params" in doc
    loaded = load_predictor(path)
    assert type(loaded) is type(model)
    np.testing.assert_array_equal(loaded.predict(test), model.predict(test))
    assert type(model).load(path, family="nb201").kind == kind
    assert not list(tmp_path.glob(".*.tmp"))  # atomic: no temp files left behind


@pytest.mark.parametrize("kind", PREDICTORS.names())
def test_unfitted_raises(kind: str, sim_table: LatencyTable, tmp_path: Path) -> None:
    model = make(kind, sim_table)
    with pytest.raises(NotFittedError, match="not fitted"):
        model.predict(list(sim_table.specs[:3]))
    with pytest.raises(NotFittedError):
        model.save(tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("kind", PREDICTORS.names())
def test_wrong_family_and_tampered_file(kind: str, sim_table: LatencyTable, tmp_path: Path) -> None:
    model, _, _ = fitted(kind, sim_table)
    fbnet = list(load_latency_table("fbnet").specs[:3])
    with pytest.raises(ConfigError, match=r"'nb201'.*'fbnet'"):
        model.predict(fbnet)
    path = model.save(tmp_path / "p.json")
    with pytest.raises(ConfigError, match=r"'nb201' space, expected 'fbnet'"):
        load_predictor(path, family="fbnet")
    doc = json.loads(path.read_text())
    for key, value, match in [("format_version", 99, "format_version 99"),
                              ("encoding_version", 7, "encoding_version 7"),
                              ("kind", "nope", "unknown latency predictor 'nope'")]:
        path.write_text(json.dumps({**doc, key: value}))
        with pytest.raises(ConfigError, match=match):
            load_predictor(path)


def test_fit_rejects_bad_latencies(sim_table: LatencyTable) -> None:
    specs = list(sim_table.specs[:10])
    with pytest.raises(ConfigError, match="latencies_ms must be finite and > 0"):
        LUTPredictor().fit(specs, [1.0] * 9 + [-3.0])
    with pytest.raises(ConfigError, match="latencies_ms has 9 values for 10 specs"):
        LUTPredictor().fit(specs, [1.0] * 9)
    with pytest.raises(ConfigError, match="mix families"):
        LUTPredictor().fit([*specs[:2], load_latency_table("fbnet").specs[0]], [1.0, 2.0, 3.0])


def test_lut_recovers_exactly_additive_eyeriss() -> None:
    t = load_latency_table("nb201")
    specs, y = list(t.specs), t.column("eyeriss")
    model = LUTPredictor().fit(specs[::2], y[::2])
    rel = np.abs(model.predict(specs[1::2]) / y[1::2] - 1)
    assert rel.max() < 1e-3


def test_lut_unseen_pair_falls_back_to_op_mean() -> None:
    specs = [NB201.spec(ops) for ops in [("nor_conv_3x3",) * 6, ("skip_connect",) * 6, ("none",) * 6]]
    model = LUTPredictor(alpha=1e-6).fit(specs, [7.0, 1.0, 0.5])
    probe = NB201.spec(("nor_conv_3x3",) * 5 + ("avg_pool_3x3",))  # avg_pool never seen: entry 0
    assert np.isfinite(model.predict([probe])).all()
    assert model.table_ms_[:, NB201.ops.index("avg_pool_3x3")].tolist() == [0.0] * 6


def test_mlp_gradient_flows_through_soft_onehot(sim_table: LatencyTable) -> None:
    model = MLPPredictor(epochs=50).fit(list(sim_table.specs[:100]), sim_table.column(TARGET)[:100])
    logits = torch.zeros(4, NB201.n_positions, len(NB201.ops), requires_grad=True)
    soft = torch.softmax(logits, dim=-1).reshape(4, -1)
    latency_ms = model.predict_onehot_torch(soft)
    assert latency_ms.shape == (4,) and (latency_ms > 0).all()
    latency_ms.sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    hard = torch.from_numpy(NB201.one_hot(list(sim_table.specs[:5])))
    np.testing.assert_allclose(model.torch_module()(hard).detach().numpy(),
                               model.predict(list(sim_table.specs[:5])), rtol=1e-6)
    with pytest.raises(ConfigError, match="x must be"):
        model.predict_onehot_torch(torch.zeros(2, 3))


def test_transfer_predicts_archs_outside_source_table(sim_table: LatencyTable, tmp_path: Path) -> None:
    inside = sim_table.take(np.arange(300))
    model = TransferPredictor(source=inside, exclude=[TARGET]).fit(list(inside.specs[:10]),
                                                                   inside.column(TARGET)[:10])
    assert 1 <= len(model.sources_) <= 3 and TARGET not in model.sources_
    outside = list(sim_table.specs[300:])
    m = evaluate_predictions(sim_table.column(TARGET)[300:], model.predict(outside))
    assert m["spearman"] > 0.8
    loaded = load_predictor(model.save(tmp_path / "t.json"))
    np.testing.assert_allclose(loaded.predict(outside), model.predict(outside))
    with pytest.raises(ConfigError, match="not in"):
        TransferPredictor(source=inside, exclude=["nope"]).fit(list(inside.specs[:5]), np.ones(5))
    with pytest.raises(ConfigError, match="needs source"):
        TransferPredictor().fit(list(inside.specs[:5]), np.ones(5))


def test_metrics_on_hand_made_arrays() -> None:
    m = evaluate_predictions([10.0, 20.0, 30.0, 40.0], [10.0, 21.0, 33.0, 30.0])
    assert m["n"] == 4
    assert m["mape"] == pytest.approx((0 + 0.05 + 0.1 + 0.25) / 4)
    assert m["within_5"] == 0.5 and m["within_10"] == 0.75
    assert m["rmse_ms"] == pytest.approx(np.sqrt((0 + 1 + 9 + 100) / 4))
    assert m["spearman"] == pytest.approx(0.8) and m["kendall"] == pytest.approx(2 / 3)
    flat = evaluate_predictions([1.0, 2.0, 3.0], [2.0, 2.0, 2.0])
    assert flat["spearman"] == 0.0 and flat["kendall"] == 0.0
    with pytest.raises(Exception, match="same length"):
        evaluate_predictions([1.0, 2.0], [1.0])
