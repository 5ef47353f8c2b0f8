""".tflite export: the int8 graph run by TensorFlow Lite Micro's reference kernels (tflite-micro package) gives
our outputs byte for byte, and our planned arena is smaller than the arena TFLM needs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from devicefit import models as M
from devicefit.core import ArchSpec, UnsupportedOpError
from devicefit.export import (
    QGraph,
    convert_to_int8,
    plan_for_c,
    quantize_input,
    run_reference,
    tflite_bytes,
    tflm_arena,
    tflm_run,
)

pytest.importorskip("tflite")
pytest.importorskip("tflite_micro")


def _graph(name: str, params: dict, shape: tuple[int, int, int]) -> QGraph:
    torch.manual_seed(0)
    model = M.build(ArchSpec(name, {**params, "input_shape": shape})).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
    return convert_to_int8(model, torch.randn(16, *shape))


@pytest.mark.parametrize("name,params,shape", [
    ("dscnn", {"channels": 16, "num_blocks": 2}, (1, 49, 10)),  # PAD before the first conv (torch ≠ SAME)
    ("resnet8", {"width_mult": 0.5}, (3, 16, 16)),  # residual adds with fused ReLU, 1×1 stride-2 shortcuts
    ("mobilenet_v2", {"width_mult": 0.35}, (3, 16, 16)),  # ReLU6, depthwise, adds without activation
])
def test_tflm_outputs_equal_ours_and_our_arena_is_smaller(name: str, params: dict, shape: tuple) -> None:
    g = _graph(name, params, shape)
    xq = quantize_input(g, np.random.default_rng(0).normal(size=(6, *shape)))
    model = tflite_bytes(g)
    assert model[4:8] == b"TFL3"
    np.testing.assert_array_equal(tflm_run(model, xq), run_reference(g, xq))
    arena = tflm_arena(model, xq[0])
    assert arena["arena_bytes"] == arena["head_bytes"] + arena["tail_bytes"]
    assert plan_for_c(g).arena_bytes < arena["arena_bytes"]


def test_pooling_padding_tflite_cannot_express_is_unsupported() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(3, 2, 1)).eval()  # pad 1 each side on 6×6: not SAME
    g = convert_to_int8(model, torch.randn(4, 3, 8, 8))
    with pytest.raises(UnsupportedOpError, match=r"max_pool2d.*neither TFLite SAME nor VALID"):
        tflite_bytes(g)
