"""FBNet space: the CIFAR macro-architecture, block shapes, skip projections, channel shuffle and ONNX export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from devicefit.core import ConfigError
from devicefit.hardware import FBNET
from devicefit.models.shufflenet_v2 import channel_shuffle
from devicefit.nn import export_onnx
from devicefit.space import FBNetBlock, FBNetNetwork, get_space, layer_shapes

SPACE = get_space("fbnet")
# every op at least twice, skips at shape-keeping (l00, l02) and shape-changing (l01, l05) layers
SPEC = FBNET.spec(["skip", "skip", "skip", "k3_e1_g2", "k3_e3", "skip", "k5_e1_g2", "k3_e6", "k5_e1", "k5_e3",
                   "k5_e6", "k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "k3_e1",
                   "k5_e1_g2", "k3_e6"])


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_layer_shapes_follow_the_stage_table() -> None:
    shapes = layer_shapes()
    assert len(shapes) == 22 == FBNET.n_positions
    assert [c for _, c, _ in shapes] == [16] + [24] * 4 + [32] * 4 + [64] * 4 + [112] * 4 + [184] * 4 + [352]
    assert [i for i, (_, _, s) in enumerate(shapes) if s == 2] == [5, 9, 17]  # CIFAR: total stride 8
    assert all(shapes[i][1] == shapes[i + 1][0] for i in range(21)) and shapes[0][0] == 16


def test_forward_shape_and_parameter_counts() -> None:
    model = SPACE.build(SPEC).eval()
    assert isinstance(model, FBNetNetwork)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    # all-skip: stem 464, six 1×1 conv-BN projections, head 1×1 conv 352→1504 + BN, linear 1504→100
    proj = sum(ci * co + 2 * co for ci, co, s in layer_shapes() if s != 1 or ci != co)
    assert _params(SPACE.build(FBNET.spec(["skip"] * 22))) == 464 + proj + 352 * 1504 + 2 * 1504 + 1504 * 100 + 100
    assert _params(SPACE.build(FBNET.spec(["k3_e1"] * 22), num_classes=10)) < _params(
        SPACE.build(FBNET.spec(["k5_e6"] * 22), num_classes=10))


def test_skip_is_identity_only_where_the_shape_is_kept() -> None:
    model = SPACE.build(FBNET.spec(["skip"] * 22))
    kinds = [isinstance(layer, nn.Identity) for layer in model.layers]
    keeps = [s == 1 and ci == co for ci, co, s in layer_shapes()]
    assert kinds == keeps and kinds.count(False) == 6


@pytest.mark.parametrize(("groups", "expansion"), [(1, 6), (2, 1)])
def test_block_shapes_and_residual(groups: int, expansion: int) -> None:
    block = FBNetBlock(24, 32, 2, kernel_size=5, expansion=expansion, groups=groups).eval()
    assert block(torch.randn(1, 24, 16, 16)).shape == (1, 32, 8, 8) and not block.use_residual
    same = FBNetBlock(24, 24, 1, kernel_size=3, expansion=expansion, groups=groups)
    assert same.use_residual and same.expand[0].groups == groups and same.project[0].groups == groups


def test_grouped_block_shuffle_matches_reshape_transpose() -> None:
    block = FBNetBlock(16, 16, 1, kernel_size=3, expansion=1, groups=2)
    y = torch.randn(2, 16, 4, 4)
    assert torch.equal(torch.index_select(y, 1, block.shuffle), channel_shuffle(y, 2))


def test_build_checks_arguments() -> None:
    with pytest.raises(ConfigError, match=r"input_shape .* too small for fbnet"):
        SPACE.build(SPEC, input_shape=(3, 4, 4))
    with pytest.raises(ConfigError, match="num_classes must be an int >= 1, got 0"):
        SPACE.build(SPEC, num_classes=0)
    with pytest.raises(ConfigError, match="op 'k7_e6' at l03"):
        SPACE.build(SPEC.replace(ops=("skip",) * 3 + ("k7_e6",) + ("skip",) * 18))


@pytest.mark.slow
def test_onnx_export_and_parity(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = SPACE.build(SPEC, num_classes=10)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    model.eval()
    path = export_onnx(model, (3, 32, 32), tmp_path / "fbnet.onnx")
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "Gather" in ops and not {"Reshape", "Transpose", "Shape"} & ops  # shuffle is one constant gather
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(x).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    assert got.shape == (1, 10) and np.abs(got - ref).max() < 1e-4
