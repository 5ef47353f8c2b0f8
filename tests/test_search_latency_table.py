"""Latency tables fitted to end-to-end timings: exact recovery of a synthetic additive cost, the LinearCost it
gives LightNAS, JSON round trip, refusal of a table for another space / widths / target, one real timing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from devicefit.core import ArchSpec, ConfigError, DataError, NotFittedError
from devicefit.search._latency_table import LatencyTable, LatencyTableConfig, sample_calibration_specs
from devicefit.space import MBCONV_OPS, get_space

SPACE = get_space("mbconv")
FIRST = [f for _, f in SPACE.layer_stage()]


def synthetic_table(seed: int = 0) -> tuple[float, np.ndarray]:
    """A positive additive cost: skip 0 where allowed, NaN where impossible."""
    rng = np.random.default_rng(seed)
    table = rng.uniform(0.01, 0.2, (SPACE.n_layers, len(MBCONV_OPS)))
    table[:, -1] = [math.nan if f else 0.0 for f in FIRST]
    return 0.3, table


def true_cost(const: float, table: np.ndarray, spec: ArchSpec) -> float:
    return const + sum(table[i, MBCONV_OPS.index(op)] for i, op in enumerate(spec["ops"]))


def fitted(prior: str = "none", ridge: float = 0.0, n: int = 300) -> tuple[LatencyTable, float, np.ndarray]:
    const, table = synthetic_table()
    specs = sample_calibration_specs(SPACE, (0.5,) * 6, n, seed=1)
    y = [true_cost(const, table, s) for s in specs]
    cfg = LatencyTableConfig(widths=0.5, prior=prior, ridge=ridge, holdout=0.2)
    return LatencyTable(cfg).fit(specs, y), const, table


def test_fit_recovers_a_synthetic_additive_cost_exactly() -> None:
    lt, const, table = fitted()
    fresh = sample_calibration_specs(SPACE, (0.5,) * 6, 50, seed=7)
    for spec in fresh:
        assert lt.predict(spec) == pytest.approx(true_cost(const, table, spec), rel=1e-6)
    assert lt.holdout_["max_rel_error"] < 1e-6 and lt.train_error_["max_rel_error"] < 1e-6
    # entries are identified up to the gauge of first-of-stage layers (their k3_e3 cost lives in the constant)
    ref = MBCONV_OPS.index("k3_e3")
    for i, first in enumerate(FIRST):
        want = table[i] - table[i, ref] if first else table[i]
        np.testing.assert_allclose(lt.table_ms_[i, :-1], want[:-1], rtol=1e-6, atol=1e-9)
        assert math.isnan(lt.table_ms_[i, -1]) if first else lt.table_ms_[i, -1] == 0.0


def test_cost_is_the_table_as_a_lightnas_linear_cost() -> None:
    lt, const, table = fitted()
    spec = sample_calibration_specs(SPACE, (0.5,) * 6, 1, seed=3)[-1]
    onehot = torch.nn.functional.one_hot(torch.tensor([MBCONV_OPS.index(o) for o in spec["ops"]]),
                                         len(MBCONV_OPS)).float()
    assert float(lt.cost()(onehot)) == pytest.approx(true_cost(const, table, spec), rel=1e-5)
    lo, hi = lt.range_ms()
    assert lo == pytest.approx(const + np.nanmin(table, axis=1).sum(), rel=1e-6)
    assert hi == pytest.approx(const + np.nanmax(table, axis=1).sum(), rel=1e-6)
    assert lo < lt.predict(spec) < hi


def test_macs_prior_with_ridge_stays_close_on_an_additive_cost() -> None:
    lt, _, _ = fitted(prior="macs", ridge=1e-4)
    assert lt.holdout_["mean_rel_error"] < 0.01
    assert lt.scale_ >= 0.0


def test_json_round_trip_and_refusal_of_another_space_widths_or_target(tmp_path) -> None:
    lt, _, _ = fitted()
    path = lt.save(tmp_path / "table.json")
    back = LatencyTable.load(path, space="mbconv", widths=0.5, target="host-ort")
    np.testing.assert_array_equal(np.isnan(back.table_ms_), np.isnan(lt.table_ms_))
    np.testing.assert_allclose(np.nan_to_num(back.table_ms_), np.nan_to_num(lt.table_ms_))
    assert back.constant_ms_ == lt.constant_ms_ and back.config == lt.config
    spec = lt.specs_[5]
    assert back.predict(spec) == pytest.approx(lt.predict(spec))
    with pytest.raises(ConfigError, match="widths"):
        LatencyTable.load(path, widths=0.75)
    with pytest.raises(ConfigError, match="target"):
        LatencyTable.load(path, target="host-torch")
    with pytest.raises(ConfigError, match="space 'mbconv_kws'"):
        LatencyTable.load(path, space="mbconv_kws")
    with pytest.raises(ConfigError, match="widths"):
        back.predict(spec.replace(widths=(0.75,) * 6))
    (tmp_path / "bad.json").write_text('{"kind": "devicefit.latency_table", "config": {}}')
    with pytest.raises(DataError, match="corrupt"):
        LatencyTable.load(tmp_path / "bad.json")


def test_bad_config_and_unfitted_use() -> None:
    with pytest.raises(ConfigError, match="widths"):
        LatencyTableConfig(widths=(0.5, 0.5))
    with pytest.raises(ConfigError, match="prior"):
        LatencyTableConfig(prior="flops")
    with pytest.raises(ConfigError, match="holdout"):
        LatencyTableConfig(holdout=1.0)
    with pytest.raises(ConfigError, match="latencies_ms"):
        LatencyTable(LatencyTableConfig()).fit([SPACE.smallest().replace(widths=(0.5,) * 6)], [])
    with pytest.raises(NotFittedError):
        LatencyTable(LatencyTableConfig()).cost()


@pytest.mark.slow
def test_real_timings_fit_a_usable_table() -> None:
    torch.set_num_threads(1)
    cfg = LatencyTableConfig(widths=0.5, input_shape=(3, 8, 8), n_archs=10, repeats=10, warmup=3, passes=1,
                             holdout=0.0)
    lt = LatencyTable(cfg).fit()
    assert len(lt.measured_ms_) == 12 and np.all(lt.measured_ms_ > 0)
    lo, hi = lt.range_ms()
    assert 0 < lo < hi
    # the largest network (all k7_e6) is timed slower than the smallest; the fit orders them alike
    assert lt.measured_ms_[1] > lt.measured_ms_[0] and lt.predict(lt.specs_[1]) > lt.predict(lt.specs_[0])
