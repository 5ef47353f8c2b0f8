"""ONNX export: both exporters, dynamic batch, atomic writes and clear failures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from devicefit.core import ConfigError, UnsupportedOpError
from devicefit.nn import ConvBNAct, InvertedResidual, export_onnx


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(ConvBNAct(3, 8, 3, 2), InvertedResidual(8, 8, expand_ratio=2, se=True),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))


def _run(path: Path, x: torch.Tensor) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


def test_legacy_export_matches_torch(tmp_path: Path) -> None:
    model = _tiny().train()
    path = export_onnx(model, (3, 16, 16), tmp_path / "tiny.onnx")
    assert path == tmp_path / "tiny.onnx" and model.training  # mode restored
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.onnx"]  # no temp file left
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == ["input"]
    assert proto.opset_import[0].version == 17
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    np.testing.assert_allclose(_run(path, x), expected, atol=1e-4)


def test_legacy_dynamic_batch(tmp_path: Path) -> None:
    model = _tiny().eval()
    path = export_onnx(model, (3, 16, 16), tmp_path / "dyn.onnx", dynamic_batch=True, opset=13)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        np.testing.assert_allclose(_run(path, x), model(x).numpy(), atol=1e-4)


def test_failed_export_names_model_and_leaves_target_alone(tmp_path: Path) -> None:
    class Bessel(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.special.bessel_j0(x)

    target = tmp_path / "m.onnx"
    target.write_bytes(b"old")
    with pytest.raises(UnsupportedOpError, match=r"Bessel.*legacy exporter.*bessel_j0"):
        export_onnx(Bessel(), (4,), target)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


@pytest.mark.parametrize(("kwargs", "match"), [({"input_shape": (3, -1)}, "input_shape"),
                                               ({"input_shape": (3, 8, 8), "opset": 99}, "opset")])
def test_bad_arguments(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        export_onnx(_tiny(), path=tmp_path / "x.onnx", **kwargs)


@pytest.mark.slow
def test_dynamo_export_dynamic_batch(tmp_path: Path) -> None:
    model = _tiny().eval()
    path = export_onnx(model, (3, 16, 16), tmp_path / "dynamo.onnx", dynamo=True, dynamic_batch=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dynamo.onnx"]  # weights inline, one file
    dim0 = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param == "batch"
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        np.testing.assert_allclose(_run(path, x), model(x).numpy(), atol=1e-4)
