"""Blocks: output shapes, residual and projection rules, width rounding, activation choices."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from devicefit.core import ConfigError
from devicefit.nn import (
    BasicBlock,
    ConvBNAct,
    DepthwiseSeparable,
    InvertedResidual,
    SqueezeExcite,
    make_activation,
    make_divisible,
)


@pytest.mark.parametrize(("channels", "divisor", "expected"), [
    (32 * 0.35, 8, 16),  # 11.2 rounds to 8, which is > 10 % below 11.2, so it bumps to 16
    (16 * 0.35, 8, 8),  # never below the divisor
    (24, 8, 24),
    (100, 8, 104),
    (58, 16, 64),
    (3, 1, 3),
])
def test_make_divisible(channels: float, divisor: int, expected: int) -> None:
    assert make_divisible(channels, divisor) == expected


def test_make_divisible_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="channels"):
        make_divisible(0)
    with pytest.raises(ConfigError, match="divisor"):
        make_divisible(8, 0)


@pytest.mark.parametrize(("act", "cls"), [("relu", nn.ReLU), ("relu6", nn.ReLU6), ("hardswish", nn.Hardswish),
                                          ("none", nn.Identity)])
def test_conv_bn_act_layers(act: str, cls: type) -> None:
    block = ConvBNAct(3, 8, 3, 2, act=act)
    assert [type(m) for m in block] == [nn.Conv2d, nn.BatchNorm2d, cls]
    assert block[0].bias is None
    assert block(torch.randn(2, 3, 9, 9)).shape == (2, 8, 5, 5)


def test_conv_bn_act_rectangular_kernel_and_bad_act() -> None:
    block = ConvBNAct(1, 4, (10, 4), (2, 2))
    assert block[0].padding == (4, 1)
    assert block(torch.randn(1, 1, 49, 10)).shape == (1, 4, 24, 5)
    with pytest.raises(ConfigError, match="unknown activation 'gelu'; known: hardswish, none, relu, relu6"):
        make_activation("gelu")


def test_depthwise_separable() -> None:
    block = DepthwiseSeparable(8, 16, 2)
    assert block[0][0].groups == 8
    assert block(torch.randn(2, 8, 8, 8)).shape == (2, 16, 4, 4)


@pytest.mark.parametrize(("cin", "cout", "stride", "expand", "k", "residual"), [
    (8, 8, 1, 1, 3, True),
    (8, 8, 1, 6, 5, True),
    (8, 16, 1, 4, 7, False),
    (8, 8, 2, 3, 3, False),
])
def test_inverted_residual(cin: int, cout: int, stride: int, expand: float, k: int, residual: bool) -> None:
    block = InvertedResidual(cin, cout, stride, expand_ratio=expand, kernel_size=k)
    assert block.use_residual is residual
    assert len(block.block) == (2 if expand == 1 else 3)
    dw = block.block[0 if expand == 1 else 1][0]
    assert dw.kernel_size == (k, k) and dw.groups == round(cin * expand)
    assert block(torch.randn(2, cin, 8, 8)).shape == (2, cout, 8 // stride, 8 // stride)


def test_inverted_residual_adds_the_input() -> None:
    block = InvertedResidual(8, 8, 1, expand_ratio=2).eval()
    x = torch.randn(1, 8, 4, 4)
    with torch.no_grad():
        assert torch.allclose(block(x), x + block.block(x))


def test_inverted_residual_with_se_and_bad_args() -> None:
    block = InvertedResidual(8, 8, 1, expand_ratio=4, se=True)
    assert any(isinstance(m, SqueezeExcite) for m in block.modules())
    assert block(torch.randn(1, 8, 6, 6)).shape == (1, 8, 6, 6)
    with pytest.raises(ConfigError, match="kernel_size"):
        InvertedResidual(8, 8, kernel_size=4)
    with pytest.raises(ConfigError, match="stride"):
        InvertedResidual(8, 8, 3)


def test_squeeze_excite_scales_channels_within_0_1() -> None:
    se = SqueezeExcite(16).eval()
    assert se.reduce.out_channels == 8  # make_divisible(16 / 4) = 8
    x = torch.rand(2, 16, 5, 5) + 0.1
    y = se(x)
    ratio = y / x
    assert y.shape == x.shape
    assert torch.all(ratio >= 0) and torch.all(ratio <= 1)
    assert torch.allclose(ratio, ratio[:, :, :1, :1].expand_as(ratio))  # one scale per channel


def test_basic_block_projection_rule() -> None:
    assert BasicBlock(16, 16, 1).shortcut is None
    assert BasicBlock(16, 32, 1).shortcut is not None
    proj = BasicBlock(16, 32, 2)
    assert proj.shortcut[0].stride == (2, 2)
    assert proj(torch.randn(2, 16, 8, 8)).shape == (2, 32, 4, 4)
