"""Update schemes and memory-lean ops: same gradients as stock ops, plans, restore, the original untouched."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from devicefit.core import ConfigError
from devicefit.models import MODELS, build, default_spec
from devicefit.train import (
    SCHEMES,
    FoldedBN,
    FrozenConv2d,
    LeanAvgPool2d,
    LiteResidual,
    MaskReLU,
    SchemeConfig,
    SparseConv2d,
    TrainConfig,
    measure_step_rss,
    modelled_memory,
    pack_bits,
    plan_updates,
    prepare,
    restore,
    unpack_bits,
    weight_layers,
)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _grad_of(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    out = module(x)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out.detach(), x.grad


@pytest.mark.parametrize("bits", [1, 8])
@pytest.mark.parametrize(("stock", "upper"), [(nn.ReLU(), None), (nn.ReLU6(), 6.0)])
def test_mask_relu_matches_stock(stock: nn.Module, upper: float | None, bits: int) -> None:
    x = torch.randn(2, 3, 5, 7) * 5
    out, grad = _grad_of(MaskReLU(upper, bits), x)
    ref_out, ref_grad = _grad_of(stock, x)
    assert torch.equal(out, ref_out) and torch.equal(grad, ref_grad)


def test_pack_bits_round_trip() -> None:
    mask = torch.rand(3, 5, 7) > 0.5  # 105 elements: not a multiple of 8
    packed = pack_bits(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == 14
    assert torch.equal(unpack_bits(packed, mask.shape), mask)


def test_frozen_conv_matches_stock_gradients() -> None:
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, bias=True)
    x = torch.randn(2, 4, 9, 9)
    out, grad = _grad_of(FrozenConv2d(conv), x)
    assert conv.bias.grad is not None
    bias_grad = conv.bias.grad.clone()
    conv.bias.grad = None
    conv.weight.requires_grad_(True)
    ref_out, ref_grad = _grad_of(conv, x)
    assert torch.allclose(out, ref_out, atol=1e-6) and torch.allclose(grad, ref_grad, atol=1e-5)
    assert torch.allclose(bias_grad, conv.bias.grad, atol=1e-5)


def test_folded_bn_equals_eval_bn_and_restores_its_shift() -> None:
    bn = nn.BatchNorm2d(3)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 4, 4)
    ref = bn.eval()(x)
    folded = FoldedBN(bn, train_shift=True)
    assert torch.allclose(folded(x), ref, atol=1e-5)
    with torch.no_grad():
        folded.shift.add_(0.25)
    assert torch.allclose(folded.restore().eval()(x), ref + 0.25, atol=1e-5)


def test_sparse_conv_trains_chosen_channels_only() -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1)
    w0 = conv.weight.detach().clone()
    sparse = SparseConv2d(conv, [1, 5])
    x = torch.randn(2, 3, 6, 6)
    assert torch.allclose(sparse(x), F.conv2d(x, w0, conv.bias, padding=1), atol=1e-6)
    sparse(x).sum().backward()
    assert sparse.delta.grad.shape == (2, 3, 3, 3) and conv.weight.grad is None
    with torch.no_grad():
        sparse.delta.add_(1.0)
    changed = (sparse.restore().weight.detach() - w0).flatten(1).abs().sum(1) > 0
    assert changed.nonzero().flatten().tolist() == [1, 5]


@pytest.mark.parametrize("size", [(8, 8), (25, 5)])
def test_lean_avg_pool_matches_stock_gradients(size: tuple[int, int]) -> None:
    x = torch.randn(2, 3, *size)
    out, grad = _grad_of(LeanAvgPool2d(2), x)
    ref_out, ref_grad = _grad_of(nn.AvgPool2d(2), x)
    assert torch.allclose(out, ref_out) and torch.allclose(grad, ref_grad)


def test_lite_residual_starts_as_the_block_and_trains_only_its_branch() -> None:
    net, shape = _dscnn()
    prepared = prepare(net, SchemeConfig("tinytl"))
    lite = [m for m in prepared.modules() if isinstance(m, LiteResidual)]
    assert len(lite) == 4  # the four depthwise-separable blocks after the stem
    x = torch.randn(2, *shape)
    assert torch.allclose(prepared.eval()(x), net(x), atol=1e-4)
    trainable = {n.split(".")[-2] for n, p in prepared.named_parameters() if p.requires_grad and ".block." not in n}
    assert {"conv", "project"} <= trainable


def _dscnn() -> tuple[nn.Module, tuple[int, int, int]]:
    torch.manual_seed(0)
    net = build(default_spec("dscnn", num_classes=10, width_mult=0.5))
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval(), (1, 49, 10)


@pytest.mark.parametrize("name", SCHEMES.names())
def test_prepare_keeps_function_and_original_and_restore_round_trips(name: str) -> None:
    net, shape = _dscnn()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    prepared = prepare(net, SchemeConfig(name, layers=(-1, 2), channel_ratio=0.5))
    x = torch.randn(3, *shape)
    assert torch.allclose(prepared.eval()(x), net(x), atol=1e-4)  # same function before any update
    # one SGD step changes only what the scheme trains
    prepared.train()
    opt = torch.optim.SGD([p for p in prepared.parameters() if p.requires_grad], lr=0.1)
    F.cross_entropy(prepared(x), torch.tensor([0, 1, 2])).backward()
    opt.step()
    back = restore(prepared).eval()
    if name == "tinytl":  # the lite residual branches are new modules and stay
        assert any(".block." in k for k in back.state_dict()) and any(".project." in k for k in back.state_dict())
    else:
        assert set(back.state_dict()) == set(net.state_dict())
    if name != "full":  # full trains BN in batch-statistics mode, so eval outputs legitimately differ
        assert torch.allclose(back(x), prepared.eval()(x), atol=1e-4)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.requires_grad for p in net.parameters())


def test_plans() -> None:
    net, _ = _dscnn()
    n = len(weight_layers(net))
    assert n == 10 and weight_layers(net)[0].bn_name is not None and weight_layers(net)[-1].bn_name is None
    full = plan_updates(net, SchemeConfig("full"))
    assert set(full.weights) == set(range(n)) and full.bn_affine == frozenset(range(n))
    last = plan_updates(net, SchemeConfig("last-k", last_k=3))
    assert set(last.weights) == {7, 8, 9}
    bias = plan_updates(net, SchemeConfig("bias"))
    assert set(bias.weights) == {9} and bias.biases == frozenset(range(n)) and not bias.bn_affine
    sparse = plan_updates(net, SchemeConfig("sparse", layers=(-1, 3), layer_ratios=(1.0, 0.25), bias_layers=2))
    assert sparse.weights == {9: 1.0, 3: 0.25} and sparse.biases == frozenset({8, 9})


def test_lean_schemes_cost_less_than_full() -> None:
    net, shape = _dscnn()
    cfg = TrainConfig(batch_size=8, momentum=0.9)
    full = modelled_memory(prepare(net, SchemeConfig("full")), shape, cfg)
    bias = modelled_memory(prepare(net, SchemeConfig("bias")), shape, cfg)
    sparse = modelled_memory(prepare(net, SchemeConfig("sparse", layers=(-1, -2), bias_layers=3)), shape, cfg)
    assert full.budget_bytes > 20 * bias.budget_bytes
    assert full.budget_bytes > 4 * sparse.budget_bytes > 4 * bias.budget_bytes
    assert full.optimizer_state_bytes == full.gradient_bytes  # SGD momentum: one slot


@pytest.mark.parametrize("bn_stats", ["running", "batch"])
def test_bn_stats_option_of_full_fine_tuning(bn_stats: str) -> None:
    """'running': BN normalises with its running statistics, which stay put, while γ/β train; 'batch' (the
    default): stock train-mode BN (batch statistics, running statistics updated). Both restore to stock BN."""
    net, shape = _dscnn()
    prepared = prepare(net, SchemeConfig("full", bn_stats=bn_stats)).train()
    bn_name = weight_layers(net)[0].bn_name
    before = {k: v.clone() for k, v in net.get_submodule(bn_name).state_dict().items()}
    opt = torch.optim.SGD([p for p in prepared.parameters() if p.requires_grad], lr=0.1)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn((8, *shape), generator=g) * 3 + 1, torch.randint(0, 10, (8,), generator=g)
    out = prepared(x)
    F.cross_entropy(out, y).backward()
    opt.step()
    stock = restore(prepared).get_submodule(bn_name)
    assert type(stock) is nn.BatchNorm2d
    moved = not torch.equal(stock.running_mean, before["running_mean"])
    assert moved == (bn_stats == "batch")
    assert not torch.equal(stock.weight, before["weight"]) and not torch.equal(stock.bias, before["bias"])
    if bn_stats == "running":  # the forward equals the eval-mode network's: batch statistics play no part
        assert torch.allclose(out, net.eval()(x), atol=1e-5)


def test_bad_scheme_configs() -> None:
    with pytest.raises(ConfigError, match="update scheme"):
        SchemeConfig("everything")
    with pytest.raises(ConfigError, match="last_k"):
        SchemeConfig("last-k", last_k=0)
    with pytest.raises(ConfigError, match="channel_ratio"):
        SchemeConfig("sparse", layers=(1,), channel_ratio=0)
    with pytest.raises(ConfigError, match="layer_ratios"):
        SchemeConfig("sparse", layers=(1, 2), layer_ratios=(0.5,))
    with pytest.raises(ConfigError, match="mask_bits"):
        SchemeConfig("bias", mask_bits=4)
    with pytest.raises(ConfigError, match="bn_stats"):
        SchemeConfig("full", bn_stats="ema")
    net, _ = _dscnn()
    with pytest.raises(ConfigError, match="sparse layers"):
        prepare(net, SchemeConfig("sparse", layers=(10,)))


def test_every_zoo_model_prepares_under_every_scheme() -> None:
    for info in MODELS.names():
        net = build(default_spec(info, num_classes=10, width_mult=0.25))
        for name in SCHEMES.names():
            prepared = prepare(net, SchemeConfig(name, layers=(-1,)))
            assert any(p.requires_grad for p in prepared.parameters())


@pytest.mark.slow
def test_measured_step_rss_tracks_the_model() -> None:
    """Peak RSS of a real training step in a fresh process: full fine-tuning near the modelled step, and
    the lean bias-only step clearly smaller (kernel scratch keeps it above its model)."""
    net, shape = _dscnn()
    cfg = TrainConfig(batch_size=32, momentum=0.9)
    full_net, bias_net = prepare(net, SchemeConfig("full")), prepare(net, SchemeConfig("bias"))
    full = measure_step_rss(full_net, shape, 10, batch_size=32, cfg=cfg, repeats=1)
    bias = measure_step_rss(bias_net, shape, 10, batch_size=32, cfg=cfg, repeats=1)
    modelled = modelled_memory(full_net, shape, cfg).step_bytes
    assert abs(full.value - modelled) < 0.25 * modelled
    assert full.value > 2 * bias.value
    assert full.unit == "bytes" and full.method["batch_size"] == 32
