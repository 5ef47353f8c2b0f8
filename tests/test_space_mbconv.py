"""MBConv spaces (`mbconv`, `mbconv_kws`): the Space contract, the positional view, exact analytic costs,
and the weight-sharing supernet whose extracted static model matches it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from devicefit.core import ArchSpec, ConfigError, NotFittedError, UnsupportedOpError
from devicefit.nn import analyze
from devicefit.space import (
    MBCONV_OPS,
    WEIGHT_SHARING,
    WIDTH_CHOICES,
    ElasticConvBN,
    MBConvNet,
    MBConvSpace,
    MBConvStage,
    MBConvSupernet,
    get_space,
    list_spaces,
)
from devicefit.space._mbconv_cost import mbconv_cost, mbconv_cost_table

NAMES = [n for n in list_spaces() if isinstance(get_space(n), MBConvSpace)]


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    """Tiny tensors on a shared 2-core machine: one intra-op thread is faster and fair to other jobs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class TinySpace(MBConvSpace):
    """Two small stages on 1×16×16 inputs: fast supernet tests (not registered)."""

    name = "mbconv"  # shares the family so specs validate like the registered one's layout rules
    input_shape = (1, 16, 16)
    stages = (MBConvStage(8, 2, 1), MBConvStage(16, 2, 2))
    head_channels = 32


def test_both_layouts_are_registered() -> None:
    assert set(NAMES) == {"mbconv", "mbconv_kws"}
    assert get_space("mbconv").input_shape == (3, 32, 32) and get_space("mbconv_kws").input_shape == (1, 49, 10)


@pytest.mark.parametrize("name", NAMES)
def test_sample_mutate_crossover_encode(name: str) -> None:
    space = get_space(name)
    rng = np.random.default_rng(0)
    specs = [space.sample(rng) for _ in range(40)]
    assert specs[0] == space.sample(np.random.default_rng(0))
    assert len(set(specs)) == 40 and all(space.contains(s) for s in specs)
    assert specs[0] == ArchSpec.from_json(specs[0].to_json())
    seen_ops = {op for s in specs for op in s["ops"]}
    assert seen_ops == set(MBCONV_OPS) and {w for s in specs for w in s["widths"]} == set(WIDTH_CHOICES)
    for s in specs[:10]:
        child = space.mutate(s, rng)
        assert space.contains(child) and child != s
        mix = space.crossover(s, specs[-1], rng)
        assert all(v in (a, b) for v, a, b in zip(space.values(mix), space.values(s), space.values(specs[-1]),
                                                  strict=True))
    enc = space.encode(specs)
    n_features = sum(len(c) for c in space.choices())
    assert enc.shape == (40, n_features) and enc.dtype == np.float32
    assert np.all(enc.sum(1) == len(space.choices()))  # one hot per position
    assert space.from_values(space.values(specs[3])) == specs[3]


@pytest.mark.parametrize("name", NAMES)
def test_validate_names_the_position_and_first_layers_never_skip(name: str) -> None:
    space = get_space(name)
    spec = space.sample(np.random.default_rng(1))
    ops = list(spec["ops"])
    ops[0] = "skip"
    with pytest.raises(ConfigError, match=r"layer 0 is 'skip', expected one of"):
        space.validate(spec.replace(ops=tuple(ops)))
    with pytest.raises(ConfigError, match=r"stage 1 width is 0\.6"):
        space.validate(spec.replace(widths=(spec["widths"][0], 0.6, *spec["widths"][2:])))
    with pytest.raises(ConfigError, match=r"needs \d+ ops and \d+ widths"):
        space.validate(spec.replace(ops=("k3_e3",)))
    with pytest.raises(ConfigError, match="expected an ArchSpec of family"):
        space.validate(ArchSpec("nb201", {"ops": ()}))
    assert not space.contains("k3_e3")
    with pytest.raises(UnsupportedOpError, match="too many to enumerate"):
        next(iter(space.enumerate()))
    assert space.size == int(np.prod([len(c) for c in space.choices()]))


@pytest.mark.parametrize("name", NAMES)
def test_analytic_costs_equal_the_built_network(name: str) -> None:
    space = get_space(name)
    rng = np.random.default_rng(2)
    for spec in (space.sample(rng), space.smallest()):
        net = space.build(spec)
        assert isinstance(net, MBConvNet)
        assert net(torch.zeros(2, *space.input_shape)).shape == (2, 10)
        assert mbconv_cost(space, spec) == sum(p.numel() for p in net.parameters())
    assert mbconv_cost(space, spec, metric="macs") == analyze(net, space.input_shape).macs
    const, table = mbconv_cost_table(space, space.smallest()["widths"])
    first = [f for _, f in space.layer_stage()]
    assert np.isnan(table[first, -1]).all() and (table[[not f for f in first], -1] == 0).all()
    assert const > 0 and np.nanmin(table[:, :-1]) > 0



@pytest.mark.parametrize("name", NAMES)
def test_space_cost_contract_matches_analyze_and_spans_smallest_to_largest(name: str) -> None:
    """`analytic_cost` and `largest` as the search stage uses them (as for `resnet_cifar`)."""
    space = get_space(name)
    costs = {}
    for label, spec in (("small", space.smallest()), ("large", space.largest()),
                        ("sample", space.sample(np.random.default_rng(5)))):
        report = analyze(space.build(spec), space.input_shape)
        cost = space.analytic_cost(spec)
        assert cost == {"params": report.params, "macs": report.macs, "param_bytes_int8": report.param_bytes,
                        "peak_activation_bytes_int8": report.peak_activation_bytes}
        costs[label] = cost
    assert space.validate(space.largest()) == space.largest()
    for key in ("params", "macs", "peak_activation_bytes_int8"):
        assert costs["small"][key] <= costs["sample"][key] <= costs["large"][key]

def _trained_supernet(space: MBConvSpace, sharing: str = "ofa") -> MBConvSupernet:
    torch.manual_seed(0)
    net = MBConvSupernet(space, num_classes=5, weight_sharing=sharing)
    rng = np.random.default_rng(0)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(3):  # move weights and BN statistics away from their initial values
        net.sample(rng)
        opt.zero_grad()
        net(torch.randn(4, *space.input_shape)).square().mean().backward()
        opt.step()
    return net.eval()


@pytest.mark.parametrize("sharing", WEIGHT_SHARING)
def test_extracted_model_equals_the_supernet_path_and_has_no_supernet_code(sharing: str) -> None:
    space = TinySpace()
    net = _trained_supernet(space, sharing)
    rng = np.random.default_rng(3)
    x = torch.randn(3, *space.input_shape)
    outs = set()
    for _ in range(6):
        spec = net.sample(rng)
        static = net.extract()
        assert isinstance(static, MBConvNet) and not static.training
        assert not any(isinstance(m, (ElasticConvBN, MBConvSupernet)) for m in static.modules())
        with torch.no_grad():
            torch.testing.assert_close(static(x), net(x), rtol=1e-5, atol=1e-6)
        assert sum(p.numel() for p in static.parameters()) == mbconv_cost(space, spec, num_classes=5)
        with torch.no_grad():
            outs.add(round(float(net(x).sum()), 4))
    assert len(outs) > 1  # different paths compute different functions


def test_supernet_forward_weighted_scales_by_the_op_weight() -> None:
    space = TinySpace()
    net = _trained_supernet(space)
    spec = net.sample(np.random.default_rng(4))
    onehot = torch.zeros(space.n_layers, len(MBCONV_OPS))
    for i, op in enumerate(spec["ops"]):
        onehot[i, MBCONV_OPS.index(op)] = 1.0
    x = torch.randn(2, *space.input_shape)
    with torch.no_grad():
        torch.testing.assert_close(net.forward_weighted(x, onehot), net(x))
    with pytest.raises(ConfigError, match="weights must be"):
        net.forward_weighted(x, onehot[:1])


def test_supernet_needs_an_active_path_and_an_mbconv_space() -> None:
    with pytest.raises(NotFittedError, match="set_active"):
        MBConvSupernet(TinySpace())(torch.zeros(1, 1, 16, 16))
    with pytest.raises(ConfigError, match="needs an MBConv space"):
        MBConvSupernet("nb201")
    with pytest.raises(ConfigError, match="weight_sharing must be one of ofa, per_op"):
        MBConvSupernet(TinySpace(), weight_sharing="none")


def test_ofa_sharing_holds_one_block_per_layer_and_slices_it_per_op() -> None:
    """Under "ofa" every op of a layer reads the one block: a smaller kernel is the centre of the largest
    (k3 = the middle 3x3 of the k7 depthwise weight), a smaller expansion the first hidden channels; a
    gradient through one path reaches the weights that every op of its layers uses."""
    space = TinySpace()
    ofa, per_op = (MBConvSupernet(space, num_classes=5, weight_sharing=s) for s in WEIGHT_SHARING)
    assert sum(p.numel() for p in ofa.parameters()) < sum(p.numel() for p in per_op.parameters())
    layer = ofa.layers[1]
    assert not hasattr(layer, "ops") and layer.shared.depthwise.conv.weight.shape[-1] == 7
    spec = space.largest()
    ops = ("k3_e3",) * space.n_layers
    ofa.set_active(spec.replace(ops=ops))
    ofa(torch.randn(2, *space.input_shape)).sum().backward()
    g = layer.shared.depthwise.conv.weight.grad
    c_in = ofa.max_channels[0]  # input channels of layer 1 at the largest width
    assert g[: 3 * c_in, :, 2:5, 2:5].abs().sum() > 0  # the centre 3x3 of the first e3 channels learnt
    assert g[:, :, :2].abs().sum() == 0 and g[3 * c_in:].abs().sum() == 0  # the rest untouched
    static = ofa.extract()
    block = list(static.features)[2]
    torch.testing.assert_close(block.block[1][0].weight, layer.shared.depthwise.conv.weight[: 3 * c_in, :, 2:5, 2:5])
