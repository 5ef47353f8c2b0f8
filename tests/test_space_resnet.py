"""The `resnet_cifar` model, space and supernet: ResNet-20 equivalence, validation, the analytic cost against
`models.cost`, supernet extraction and gradients, channel scaling, and int8 conversion of an extracted net."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from devicefit import models as M
from devicefit.core import ArchSpec, ConfigError, NotFittedError
from devicefit.export import convert_to_int8, dequantize_output, quantize_input, run_reference
from devicefit.nn import BasicBlock
from devicefit.search import scale_channels
from devicefit.space import (
    DEPTH_CHOICES,
    RESNET_WIDTHS,
    ResNetSpace,
    ResNetSupernet,
    get_space,
    resnet_cost,
)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def space() -> ResNetSpace:
    sp = get_space("resnet_cifar")
    assert isinstance(sp, ResNetSpace)
    return sp


def _spec(depths: tuple[int, ...], widths: tuple[float, ...]) -> ArchSpec:
    return ArchSpec("resnet_cifar", {"depths": depths, "widths": widths})


@pytest.fixture(scope="module")
def trained_supernet(space: ResNetSpace) -> ResNetSupernet:
    """A supernet after a few train-mode forwards on random paths, so BN running statistics differ per channel."""
    torch.manual_seed(0)
    net = ResNetSupernet(space, num_classes=5)
    rng = np.random.default_rng(0)
    for _ in range(4):
        net.sample(rng)
        with torch.no_grad():
            net(torch.randn(6, 3, 32, 32) * 2 + 0.5)
    return net.eval()


# -- model ------------------------------------------------------------------------------------------------


def test_defaults_are_resnet20_module_for_module() -> None:
    torch.manual_seed(0)
    ref = M.build(M.default_spec("resnet20", num_classes=7)).eval()
    net = M.build(M.default_spec("resnet_cifar", num_classes=7)).eval()
    assert [type(m) for m in net.modules()] == [type(m) for m in ref.modules()]
    n_params = sum(p.numel() for p in net.parameters())
    assert n_params == sum(p.numel() for p in ref.parameters()) == 272_279  # 272_474 with 10 classes
    for m in ref.modules():  # non-trivial BN statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    net.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x), ref(x))


def test_model_depths_channels_and_strides() -> None:
    net = M.build(ArchSpec("resnet_cifar", {"depths": (1, 2), "channels": (8, 24), "input_shape": (1, 16, 16)}))
    blocks = [m for m in net.modules() if isinstance(m, BasicBlock)]
    assert [(b.in_channels, b.out_channels, b.shortcut is not None) for b in blocks] == [
        (8, 8, False), (8, 24, True), (24, 24, False)]
    assert net(torch.randn(2, 1, 16, 16)).shape == (2, 10)
    half = M.build(ArchSpec("resnet_cifar", {"channels": (16, 32, 64), "width_mult": 0.5}))
    assert [b.out_channels for b in half.modules() if isinstance(b, BasicBlock)][::3] == [8, 16, 32]


@pytest.mark.parametrize(("params", "match"), [
    ({"depths": (3, 0, 3)}, r"depths\[1\] must be an int in \[1, 64\], got 0"),
    ({"depths": "333"}, r"depths must be a list of 1 to 8 ints"),
    ({"channels": (16, 32.5, 64)}, r"channels\[1\] must be an int in \[1, 4096\], got 32.5"),
    ({"channels": (16, 32)}, r"channels must have one entry per stage of depths \(3\), got 2"),
    ({"act": "gelu"}, r"act"),
    ({"input_shape": (3, 2, 2)}, r"input_shape \(3, 2, 2\) is too small for resnet_cifar"),
])
def test_model_rejects_bad_parameters_by_name(params: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        M.build(ArchSpec("resnet_cifar", params))


# -- space ------------------------------------------------------------------------------------------------


def test_positional_view_and_canonical_specs(space: ResNetSpace) -> None:
    assert space.choices() == (DEPTH_CHOICES,) * 3 + (RESNET_WIDTHS,) * 3
    assert space.choices()[-1] == tuple(sorted(RESNET_WIDTHS))  # what search.scale_channels reads
    r20 = space.resnet20()
    assert r20 == _spec((3, 3, 3), (1.0, 1.0, 1.0)) == space.validate(_spec([3, 3, 3], [1, 1, 1]))
    assert space.values(r20) == (3, 3, 3, 1.0, 1.0, 1.0) and space.from_values(space.values(r20)) == r20
    assert space.model_spec(r20) == M.default_spec("resnet_cifar")
    assert space.model_spec(r20, num_classes=4, input_shape=(1, 28, 28)) == M.default_spec(
        "resnet_cifar", num_classes=4, input_shape=(1, 28, 28), depths=(3, 3, 3), channels=(16, 32, 64))
    assert space.stage_channels(space.smallest()) == (8, 16, 32)
    assert space.stage_channels(space.largest()) == (32, 64, 128)
    assert space.stage_channels(_spec((1, 1, 1), (0.75, 1.25, 1.75))) == (16, 40, 112)
    assert space.size == 4**3 * 7**3 == 21952
    specs = list(space.enumerate())
    assert len(specs) == len(set(specs)) == space.size and specs[0] == space.smallest()
    assert specs[-1] == space.largest() and all(space.contains(s) for s in specs[::997])
    x = space.encode([r20, space.smallest()])
    assert x.shape == (2, 3 * 4 + 3 * 7) and np.array_equal(x.sum(axis=1), [6, 6])
    assert np.flatnonzero(x[0]).tolist() == [2, 6, 10, 14, 21, 28]


@pytest.mark.parametrize(("spec", "match"), [
    (_spec((3, 5, 3), (1.0, 1.0, 1.0)), r"resnet_cifar: stage 1 depth is 5, expected one of \[1, 2, 3, 4\]"),
    (_spec((3, 3, True), (1.0, 1.0, 1.0)), r"stage 2 depth is True"),
    (_spec((3, 3, 3), (1.0, 1.0, 0.6)), r"resnet_cifar: stage 2 width is 0.6, expected one of \[0.5, 0.75"),
    (_spec((3, 3), (1.0, 1.0, 1.0)), r"needs 3 depths and 3 widths, got 2 depths and 3 widths"),
    (ArchSpec("resnet_cifar", {"depths": (3, 3, 3), "widths": (1, 1, 1), "k": 3}), r"unexpected.*\['k'\]"),
    (ArchSpec("resnet20", {}), r"expected an ArchSpec of family 'resnet_cifar', got 'resnet20'"),
])
def test_validate_names_the_position_and_value(space: ResNetSpace, spec: ArchSpec, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        space.validate(spec)
    assert not space.contains(spec)


def test_sample_mutate_crossover_cover_every_choice(space: ResNetSpace) -> None:
    rng = np.random.default_rng(3)
    specs = [space.sample(rng) for _ in range(300)]
    for pos, allowed in enumerate(space.choices()):
        assert {space.values(s)[pos] for s in specs} == set(allowed), pos
    a, b = specs[:2]
    for _ in range(20):
        child = space.mutate(a, rng, prob=0.5)
        assert child != a and space.contains(child)
        mixed = space.crossover(a, b, rng)
        assert all(v in (x, y) for v, x, y in zip(space.values(mixed), space.values(a), space.values(b), strict=True))


def test_scale_channels_widens_resnet20_to_a_params_budget(space: ResNetSpace) -> None:
    def params(s: ArchSpec) -> float:
        return float(space.analytic_cost(s)["params"])

    r20 = space.resnet20()
    wide, steps = scale_channels(space, r20, params, 2 * params(r20))
    assert wide["depths"] == r20["depths"] and params(r20) < params(wide) <= 2 * params(r20)
    assert steps and all(s["move"] == "widen" for s in steps)
    narrow, _ = scale_channels(space, r20, params, 0.5 * params(r20))
    assert params(narrow) <= 0.5 * params(r20) and space.contains(narrow)


# -- analytic cost ----------------------------------------------------------------------------------------


def test_analytic_cost_equals_models_cost(space: ResNetSpace) -> None:
    rng = np.random.default_rng(4)
    specs = [space.resnet20(), space.smallest(), space.largest()] + [space.sample(rng) for _ in range(9)]
    for i, spec in enumerate(specs):
        kw = {"num_classes": 7, "input_shape": (1, 28, 20)} if i % 4 == 3 else {}
        report = M.cost(space.model_spec(spec, **kw), weight_bits=8, act_bits=8)  # type: ignore[arg-type]
        expected = {"params": report.params, "macs": report.macs, "param_bytes_int8": report.param_bytes,
                    "peak_activation_bytes_int8": report.peak_activation_bytes}
        assert resnet_cost(space, spec, **kw) == expected == space.analytic_cost(spec, **kw), spec  # type: ignore[arg-type]
    assert space.analytic_cost(space.resnet20())["params"] == 272_474  # ResNet-20 with a 10-class head


# -- supernet ---------------------------------------------------------------------------------------------


def test_extract_equals_the_supernet_path(space: ResNetSpace, trained_supernet: ResNetSupernet) -> None:
    net, rng = trained_supernet, np.random.default_rng(5)
    x = torch.randn(3, 3, 32, 32)
    for spec in [space.smallest(), space.largest(), space.resnet20()] + [space.sample(rng) for _ in range(3)]:
        net.set_active(spec)
        sub = net.extract()
        assert not sub.training
        assert sum(p.numel() for p in sub.parameters()) == space.analytic_cost(spec, num_classes=5)["params"]
        with torch.no_grad():
            torch.testing.assert_close(sub(x), net(x), atol=1e-5, rtol=0)
    assert net.extract(space.resnet20()).state_dict().keys() == M.build(M.default_spec("resnet20")).state_dict().keys()


def test_gradients_reach_only_the_active_slices(space: ResNetSpace) -> None:
    torch.manual_seed(1)
    net = ResNetSupernet(num_classes=4).train()
    spec = _spec((2, 1, 1), (0.5, 1.0, 1.25))  # channels 8, 32, 80 of 32, 64, 128
    net.set_active(spec)
    nn.functional.cross_entropy(net(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3])).backward()
    stem, fc = net.stem.conv.weight.grad, net.fc.weight.grad
    assert stem is not None and fc is not None
    assert stem[:8].abs().sum() > 0 and torch.all(stem[8:] == 0)
    assert fc[:, :80].abs().sum() > 0 and torch.all(fc[:, 80:] == 0)
    w = net.stages[1][0].conv1.conv.weight.grad  # (64, 32, 3, 3): 32 outputs from 8 inputs are active
    assert w is not None and w[:32, :8].abs().sum() > 0 and torch.all(w[32:] == 0) and torch.all(w[:, 8:] == 0)
    assert net.stages[0][2].conv1.conv.weight.grad is None  # block beyond the active depth
    assert net.stages[2][1].conv2.bn.weight.grad is None


def test_supernet_path_selection_and_errors(space: ResNetSpace) -> None:
    net = space.supernet(num_classes=3, input_shape=(1, 16, 16))
    assert isinstance(net, ResNetSupernet) and net.max_channels == (32, 64, 128) and net.active_ is None
    with pytest.raises(NotFittedError, match="set_active"):
        net(torch.randn(1, 1, 16, 16))
    spec = net.sample(np.random.default_rng(6))
    assert net.active_ == spec and space.contains(spec)
    assert net(torch.randn(2, 1, 16, 16)).shape == (2, 3)
    with pytest.raises(ConfigError, match="needs a ResNet space, got 'mbconv'"):
        ResNetSupernet("mbconv")
    with pytest.raises(ConfigError, match="stage 0 depth is 9"):
        net.set_active(_spec((9, 1, 1), (1.0, 1.0, 1.0)))


# -- int8 export ------------------------------------------------------------------------------------------


def test_extracted_net_converts_to_int8_and_runs_the_reference(trained_supernet: ResNetSupernet) -> None:
    spec = _spec((1, 2, 1), (0.5, 0.75, 0.5))
    sub = trained_supernet.extract(spec).eval()
    calib = torch.randn(16, 3, 32, 32)
    g = convert_to_int8(sub, calib)
    kinds = [op.kind for op in g.ops]
    assert kinds.count("add") == 4  # one residual add per block
    assert kinds.count("conv2d") == 1 + 2 * 4 + 2  # stem, two per block, two projections
    x = torch.randn(4, 3, 32, 32)
    q = run_reference(g, quantize_input(g, x.numpy()))
    assert q.shape == (4, 5) and q.dtype == np.int8
    with torch.no_grad():
        logits = sub(x).numpy()
    err = np.abs(dequantize_output(g, q) - logits)
    assert err.max() < 0.1 * np.abs(logits).max() + 3 * g.tensors[g.output].scale


def test_zoo_resnets_map_into_the_space_and_warm_start_the_supernet():
    import torch

    from devicefit import models as M
    from devicefit.space import get_space

    space = get_space("resnet_cifar")
    assert space.from_model_spec(M.default_spec("resnet20"))["depths"] == (3, 3, 3)
    assert space.from_model_spec(M.default_spec("resnet8"))["depths"] == (1, 1, 1)
    assert space.from_model_spec(M.default_spec("resnet20", width_mult=1.5))["widths"] == (1.5, 1.5, 1.5)
    assert space.from_model_spec(M.default_spec("mcunet")) is None
    torch.manual_seed(0)
    net = M.build(M.default_spec("resnet20"))
    net.train()
    for _ in range(2):
        net(torch.randn(8, 3, 32, 32))  # non-trivial BatchNorm statistics
    net.eval()
    spec = space.from_model_spec(M.default_spec("resnet20"))
    supernet = space.supernet(num_classes=10, input_shape=(3, 32, 32)).inherit_(net, spec).eval()
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(supernet.set_active(spec)(x), net(x))
    assert torch.equal(supernet.extract(spec).eval()(x), net(x))
    wider = space.validate(spec.replace(widths=(1.0, 1.5, 1.5)))
    assert supernet.set_active(wider)(x).shape == (4, 10)  # the wider path runs on the inherited slices
