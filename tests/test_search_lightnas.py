"""LightNAS on a tiny MBConv space with random data: the λ update follows eq. 7 exactly and one search run
lands the argmax architecture's cost near the target; HSCoNAS dynamic channel scaling spends the budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from devicefit.core import BudgetError, ConfigError, NotFittedError
from devicefit.search import LightNAS, LightNASConfig, LinearCost, scale_channels
from devicefit.space import MBConvSpace, MBConvStage, MBConvSupernet, get_space
from devicefit.space._mbconv_cost import mbconv_cost, mbconv_cost_table


class TinySpace(MBConvSpace):
    name = "mbconv"
    input_shape = (1, 16, 16)
    stages = (MBConvStage(8, 2, 1), MBConvStage(16, 3, 2))
    head_channels = 32


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _setup(fraction: float) -> tuple[MBConvSupernet, LinearCost, float, list[tuple[torch.Tensor, torch.Tensor]]]:
    space = TinySpace()
    torch.manual_seed(0)
    net = MBConvSupernet(space, num_classes=3)
    widths = (1.0, 1.0)
    net.set_active(space.smallest().replace(widths=widths))
    const, table = mbconv_cost_table(space, widths, num_classes=3)
    lo = const + np.nanmin(np.where(np.isnan(table), np.inf, table), axis=1).sum()
    hi = const + np.nanmax(table, axis=1).sum()
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(4, 1, 16, 16, generator=g), torch.randint(0, 3, (4,), generator=g)) for _ in range(8)]
    return net, LinearCost(const, table), lo + fraction * (hi - lo), data


def test_lambda_moves_as_eq7_says() -> None:
    net, cost, target, data = _setup(0.5)
    cfg = LightNASConfig(target=target, epochs=4, warmup_epochs=1, lambda_lr=0.5, arch_lr=0.05)
    nas = LightNAS(net, cost, cfg).fit(data[:4], data[4:])
    hist = nas.history_
    assert len(hist) == 3 * 4  # one architecture step per training batch after the warm-up epoch
    lam = 0.0
    for h in hist:
        assert h["lambda_before"] == pytest.approx(lam)
        lam = lam + 0.5 * (h["cost"] / target - 1.0)
        assert h["lambda_after"] == pytest.approx(lam)
    assert nas.lambda_ == pytest.approx(lam)
    taus = [h["tau"] for h in hist]
    assert taus[0] == pytest.approx(5.0) and taus[-1] == pytest.approx(0.2) and taus == sorted(taus, reverse=True)
    assert mbconv_cost(net.space, nas.spec_, num_classes=3) == pytest.approx(nas.cost_)  # cost_ is exact
    assert nas.result()["spec"] == nas.spec_.to_dict()


@pytest.mark.parametrize(("fraction", "sign"), [(0.05, -1), (0.95, +1)])
def test_the_cost_moves_towards_the_target(fraction: float, sign: int) -> None:
    """A target near the cheapest (dearest) end: λ rises (falls) and the expected cost falls (rises)."""
    net, cost, target, data = _setup(fraction)
    cfg = LightNASConfig(target=target, epochs=3, warmup_epochs=1, lambda_lr=0.5, arch_lr=0.05)
    hist = LightNAS(net, cost, cfg).fit(data[:4], data[4:]).history_
    costs = [h["cost"] for h in hist]
    assert sign * (costs[-1] - costs[0]) > 0
    assert -sign * hist[-1]["lambda_after"] > 0


def test_lightnas_checks_its_inputs() -> None:
    with pytest.raises(ConfigError, match="target must be > 0"):
        LightNASConfig(target=0)
    with pytest.raises(ConfigError, match=r"warmup_epochs must be in 0\.\.epochs-1"):
        LightNASConfig(target=1.0, epochs=2, warmup_epochs=2)
    net, cost, target, _ = _setup(0.5)
    with pytest.raises(NotFittedError, match="not fitted"):
        LightNAS(net, cost, LightNASConfig(target=target)).result()
    bare = MBConvSupernet(TinySpace(), num_classes=3)
    with pytest.raises(NotFittedError, match="set_active"):
        LightNAS(bare, cost, LightNASConfig(target=target)).fit([], [])


def test_channel_scaling_spends_the_remaining_budget() -> None:
    space = get_space("mbconv_kws")
    spec = space.sample(np.random.default_rng(0)).replace(widths=(0.5,) * 5)

    def params(s: object) -> float:
        return mbconv_cost(space, s)  # type: ignore[arg-type]

    limit = params(spec) * 1.6
    scaled, steps = scale_channels(space, spec, params, limit)
    assert scaled["ops"] == spec["ops"] and params(scaled) <= limit
    assert params(scaled) > params(spec) and steps and all(s["move"] == "widen" for s in steps)
    # maximal: no single stage can be widened any further within the limit
    for i, w in enumerate(scaled["widths"]):
        if w < 1.5:
            wider = list(scaled["widths"])
            wider[i] = sorted(c for c in (0.5, 0.75, 1.0, 1.25, 1.5) if c > w)[0]
            assert params(scaled.replace(widths=tuple(wider))) > limit
    # over budget: narrowed until it fits, or a clear error at the narrowest widths
    big = spec.replace(widths=(1.5,) * 5)
    narrowed, steps = scale_channels(space, big, params, limit)
    assert params(narrowed) <= limit and steps[0]["move"] == "narrow"
    with pytest.raises(BudgetError, match="at the narrowest widths the cost is"):
        scale_channels(space, big, params, params(spec) * 0.5)
