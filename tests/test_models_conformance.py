"""Every registered model, at its default width and at 0.75: forward shape, spec round trip, cost, ONNX parity."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from devicefit.core import ArchSpec
from devicefit.models import MODELS, build, cost, default_spec
from devicefit.nn import export_onnx

NAMES = MODELS.names()
WIDTHS = (None, 0.75)  # None: the family's default width
CASES = [pytest.param(name, w, id=f"{name}-{w or 'default'}") for name in NAMES for w in WIDTHS]
SHAPES = [(1, 28, 28), (3, 32, 32), (1, 49, 10), (1, 49, 40)]
# ONNX ops with int8 microcontroller kernels (Identity/Constant are exporter bookkeeping, Clip is ReLU6).
MCU_OPS = {"Conv", "Relu", "Clip", "HardSwish", "HardSigmoid", "Add", "Mul", "GlobalAveragePool", "AveragePool",
           "MaxPool", "Flatten", "Gemm", "Reshape", "Concat", "Split", "Gather", "Identity", "Constant"}


def _spec(name: str, width: float | None) -> ArchSpec:
    overrides = {} if width is None else {"width_mult": width}
    return default_spec(name, num_classes=7, **overrides)


def _built(spec: ArchSpec) -> nn.Module:
    """The network in eval mode with non-trivial BN statistics, so that export parity tests the folding."""
    torch.manual_seed(0)
    model = build(spec).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model


def _hook_macs(model: nn.Module, x: torch.Tensor) -> int:
    total = 0

    def hook(m: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        per_out = m.in_features if isinstance(m, nn.Linear) else math.prod(m.weight.shape[1:])
        total += out[0].numel() * per_out

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return total


def test_zoo_has_the_required_families() -> None:
    assert {"mobilenet_v1", "mobilenet_v2", "mcunet", "shufflenet_v2", "resnet8", "resnet20", "dscnn"} <= set(NAMES)


@pytest.mark.parametrize(("name", "width"), CASES)
def test_forward_shape(name: str, width: float | None) -> None:
    spec = _spec(name, width)
    with torch.no_grad():
        out = _built(spec)(torch.randn(3, *spec["input_shape"]))
    assert out.shape == (3, 7)


@pytest.mark.parametrize(("name", "width"), CASES)
def test_spec_json_round_trip_rebuilds_the_same_network(name: str, width: float | None) -> None:
    spec = _spec(name, width)
    again = ArchSpec.from_json(spec.to_json())
    assert again == spec and again.spec_id == spec.spec_id
    a, b = build(spec), build(again)
    assert sum(p.numel() for p in a.parameters()) == sum(p.numel() for p in b.parameters())
    assert [(k, v.shape) for k, v in a.state_dict().items()] == [(k, v.shape) for k, v in b.state_dict().items()]


@pytest.mark.parametrize(("name", "width"), CASES)
def test_cost_is_consistent(name: str, width: float | None) -> None:
    spec = _spec(name, width)
    model = _built(spec)
    report = cost(spec)
    assert report.params == sum(p.numel() for p in model.parameters()) > 0
    assert report.macs == _hook_macs(model, torch.zeros(1, *spec["input_shape"])) > 0
    assert report.param_bytes == report.params and report.param_bytes_fp32 == 4 * report.params
    input_bytes = math.prod(spec["input_shape"])
    largest = max(layer.output_bytes for layer in report.layers)
    assert max(input_bytes, largest) <= report.peak_activation_bytes <= input_bytes + sum(
        layer.output_bytes for layer in report.layers if layer.allocates)
    assert report.input_shape == spec["input_shape"] and report.peak_tensors


@pytest.mark.parametrize(("name", "width"), CASES)
def test_onnx_legacy_export_matches_onnxruntime(name: str, width: float | None, tmp_path: Path) -> None:
    spec = _spec(name, width)
    model = _built(spec)
    path = export_onnx(model, spec["input_shape"], tmp_path / f"{name}.onnx")
    assert {n.op_type for n in onnx.load(str(path)).graph.node} <= MCU_OPS
    x = torch.randn(1, *spec["input_shape"])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.abs(got - expected).max() < 1e-4


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", NAMES)
def test_accepts_images_and_audio_features(name: str, shape: tuple[int, int, int]) -> None:
    spec = default_spec(name, input_shape=shape)
    with torch.no_grad():
        assert _built(spec)(torch.randn(2, *shape)).shape == (2, 10)


@pytest.mark.slow
def test_onnx_dynamo_export_matches_onnxruntime(tmp_path: Path) -> None:
    spec = default_spec("resnet8", input_shape=(1, 28, 28))
    model = _built(spec)
    path = export_onnx(model, spec["input_shape"], tmp_path / "resnet8.onnx", dynamo=True, dynamic_batch=True)
    x = torch.randn(2, 1, 28, 28)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        assert np.abs(sess.run(None, {"input": x.numpy()})[0] - model(x).numpy()).max() < 1e-4
