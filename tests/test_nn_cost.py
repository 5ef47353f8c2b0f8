"""Analytic cost: MAC formulas, parameter bytes and the liveness pass checked by hand on tiny graphs."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from devicefit.core import ConfigError, UnsupportedOpError
from devicefit.nn import analyze


class Chain(nn.Module):
    """x(4×8×8) → conv 4→8 → BN → ReLU → conv 8→2 → flatten → linear 128→10."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(4, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 2, 1, bias=False)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flat(self.conv2(self.relu(self.bn(self.conv1(x))))))


class Residual(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + x) on 8×4×4: every tensor is 128 elements."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(out)) + x)


class Branchy(nn.Module):
    """y = conv(x); z = bn(y) + y: BN cannot fuse because y has another reader."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


def test_chain_liveness_by_hand() -> None:
    r = analyze(Chain(), (4, 8, 8))
    # Buffers (int8): x 256 B [x..conv1], conv1 512 B [conv1..conv2] (bn, relu in place),
    # conv2 128 B [conv2..fc] (flatten aliases it), fc 10 B. Peak while conv1 runs: 256 + 512.
    assert r.peak_activation_bytes == 768
    assert r.peak_node == "conv1"
    assert r.peak_tensors == ("x", "conv1")
    alloc = {layer.name: layer.allocates for layer in r.layers}
    assert alloc == {"conv1": True, "bn": False, "relu": False, "conv2": True, "flat": False, "fc": True}


def test_chain_macs_params_and_bytes() -> None:
    model = Chain()
    r = analyze(model, (4, 8, 8), weight_bits=4, act_bits=32)
    assert r.macs == 8 * 64 * 4 * 9 + 2 * 64 * 8 + 128 * 10
    assert r.params == sum(p.numel() for p in model.parameters()) == 288 + 16 + 16 + 1290
    assert r.param_bytes == (1610 * 4 + 7) // 8 and r.param_bytes_fp32 == 1610 * 4
    assert r.peak_activation_bytes == 768 * 4
    layers = {layer.name: layer for layer in r.layers}
    assert layers["flat"].output_shape == (1, 128) and layers["flat"].output_bytes == 512
    assert layers["bn"].macs == 0 and layers["bn"].params == 16


def test_residual_liveness_by_hand() -> None:
    r = analyze(Residual(), (8, 4, 4))
    # x (128 B) lives until the add; conv1 until conv2; at conv2 x + conv1 + conv2 are live.
    # The add writes into a dying operand and relu2 works in place, so no buffer is added after conv2.
    assert r.peak_activation_bytes == 3 * 128
    assert r.peak_node == "conv2"
    assert r.peak_tensors == ("x", "conv1", "conv2")
    assert [layer.name for layer in r.layers if layer.allocates] == ["conv1", "conv2"]
    assert analyze(Residual(), (8, 4, 4), act_bits=4).peak_activation_bytes == 3 * 64


def test_live_bytes_per_node_by_hand_and_scopes() -> None:
    r = analyze(Chain(), (4, 8, 8))
    live = {layer.name: layer.live_bytes for layer in r.layers}
    # conv1: x + conv1; bn, relu in place on conv1; conv2: conv1 + conv2; flat aliases; fc: conv2 + fc.
    assert live == {"conv1": 768, "bn": 512, "relu": 512, "conv2": 640, "flat": 128, "fc": 138}
    assert max(live.values()) == r.peak_activation_bytes
    assert {layer.name: layer.scope for layer in r.layers}["fc"] == "fc"
    outer = nn.Sequential(nn.Conv2d(8, 8, 1), Residual())
    scopes = {layer.name: layer.scope for layer in analyze(outer, (8, 4, 4)).layers}
    assert scopes["add"] == "1" and scopes["_1_conv2"] == "1.conv2" and scopes["_0"] == "0"


def test_unary_does_not_fuse_when_input_is_read_again() -> None:
    r = analyze(Branchy(), (2, 2, 2))
    # x 8 B, y 8 B, bn 8 B (y is read by the add too); the add writes in place into y or bn.
    alloc = {layer.name: layer.allocates for layer in r.layers}
    assert alloc == {"conv": True, "bn": True, "add": False}
    assert r.peak_activation_bytes == 16  # x dies at conv; y + bn(y) live at bn and at the add


def test_grouped_conv_macs() -> None:
    dw = nn.Conv2d(6, 6, 3, stride=2, padding=1, groups=6)
    pw = nn.Conv2d(6, 4, 1, groups=2)
    r = analyze(nn.Sequential(dw, pw), (6, 8, 8))
    assert r.macs == 6 * 16 * 1 * 9 + 4 * 16 * 3
    assert [layer.op for layer in r.layers] == ["Conv2d", "Conv2d"]


def test_report_to_dict_is_json() -> None:
    r = analyze(Chain(), (4, 8, 8))
    d = json.loads(json.dumps(r.to_dict()))
    assert d["peak_activation_bytes"] == 768 and d["layers"][0]["name"] == "conv1"


def test_analyze_restores_training_mode() -> None:
    model = Chain().train()
    analyze(model, (4, 8, 8))
    assert model.training


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"input_shape": (0, 8, 8)}, "input_shape"),
    ({"input_shape": (4, 8, 8), "weight_bits": 0}, "weight_bits"),
    ({"input_shape": (4, 8, 8), "act_bits": 33}, "act_bits"),
])
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        analyze(Chain(), **kwargs)


def test_untraceable_model_raises() -> None:
    class Dynamic(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x if x.sum() > 0 else -x

    with pytest.raises(UnsupportedOpError, match="Dynamic"):
        analyze(Dynamic(), (2,))
