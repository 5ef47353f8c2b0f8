"""torch → int8 IR: fusion rules, quantization parameters, agreement of the integer reference with the float
model on real spoken-digit inputs, and clear errors for what the converter does not support."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from devicefit import data as D
from devicefit import models as M
from devicefit.core import ArchSpec, NotFittedError, UnsupportedOpError
from devicefit.export import (
    RANGE_ESTIMATORS,
    Int8Converter,
    convert_to_int8,
    dequantize_output,
    qparams_from_range,
    quantize_input,
    run_reference,
)


@pytest.fixture(scope="module")
def fsdd() -> tuple[D.ArrayDataset, D.ArrayDataset]:
    return D.load_dataset("fsdd", "train", features="mfcc"), D.load_dataset("fsdd", "test", features="mfcc")


@pytest.fixture(scope="module")
def trained_dscnn(fsdd) -> nn.Module:  # type: ignore[no-untyped-def]
    """A small DS-CNN trained for 3 epochs on the bundled spoken digits (≈ 90 % test accuracy)."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    train, _ = fsdd
    model = M.build(ArchSpec("dscnn", {"channels": 32, "num_blocks": 2, "input_shape": (1, 49, 10)}))
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    x, y = D.to_float_tensor(train, train.x), torch.as_tensor(train.y)
    for _ in range(3):
        for idx in torch.randperm(len(x)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def test_int8_reference_agrees_with_the_float_model_on_real_inputs(trained_dscnn, fsdd) -> None:  # type: ignore[no-untyped-def]
    train, test = fsdd
    calib = D.calibration_split(train, 200)
    graph = convert_to_int8(trained_dscnn, D.to_float_tensor(calib, calib.x))
    x = D.to_float_tensor(test, test.x)
    with torch.no_grad():
        logits = trained_dscnn(x).numpy()
    q = run_reference(graph, quantize_input(graph, x.numpy()))
    agree = (q.argmax(1) == logits.argmax(1)).mean()
    acc_float, acc_int8 = (logits.argmax(1) == test.y).mean(), (q.argmax(1) == test.y).mean()
    assert acc_float > 0.6, "the fixture model did not train"
    assert agree >= 0.95 and abs(acc_int8 - acc_float) <= 0.03, (agree, acc_float, acc_int8)
    err = np.abs(dequantize_output(graph, q) - logits)
    assert np.median(err) < 0.1 * np.abs(logits).max()


def test_dscnn_fuses_bn_and_relu_into_convs(trained_dscnn) -> None:  # type: ignore[no-untyped-def]
    g = convert_to_int8(trained_dscnn, torch.randn(8, 1, 49, 10))
    assert [op.kind for op in g.ops] == ["conv2d", "depthwise_conv2d", "conv2d", "depthwise_conv2d", "conv2d",
                                         "avg_pool2d", "reshape", "fully_connected"]
    conv = g.ops[0]
    assert conv.consts["weights"].shape == (32, 10, 4, 1) and conv.consts["weights"].dtype == np.int8
    assert np.abs(conv.consts["weights"]).max(axis=(1, 2, 3)).min() == 127  # symmetric per-channel scale
    assert conv.consts["bias"].dtype == np.int32 and conv.consts["multiplier"].min() >= 2**30
    assert conv.attrs["act_min"] == g.tensors[conv.output].zero_point == -128  # fused ReLU: output range [0, max]
    assert g.tensors[g.ops[5].output].scale == g.tensors[g.ops[4].output].scale  # pooling keeps quantization
    assert g.tensors[g.input].shape == (1, 49, 10, 1)


def test_resnet_adds_and_mobilenet_relu6_convert() -> None:
    torch.manual_seed(0)
    resnet = M.build(ArchSpec("resnet8", {"width_mult": 0.5})).eval()
    g = convert_to_int8(resnet, torch.randn(8, 3, 32, 32))
    adds = [op for op in g.ops if op.kind == "add"]
    assert len(adds) == 3 and all(op.attrs["act_min"] == g.tensors[op.output].zero_point for op in adds)
    mnv2 = M.build(ArchSpec("mobilenet_v2", {"width_mult": 0.35})).eval()
    g2 = convert_to_int8(mnv2, torch.randn(4, 3, 32, 32))
    relu6 = [op for op in g2.ops if op.attrs.get("activation") == "relu6"]
    assert len(relu6) == 1 + 2 * 17 - 1 + 1  # stem, expand + depthwise per block (block 1 has no expand), last
    for op in relu6:
        t = g2.tensors[op.output]
        assert op.attrs["act_min"] == t.zero_point
        assert op.attrs["act_max"] == min(127, t.zero_point + round(6 / t.scale))
    residuals = sum(getattr(m, "use_residual", False) for m in mnv2.modules())
    assert residuals > 0 and sum(op.kind == "add" for op in g2.ops) == residuals
    out = run_reference(g2, quantize_input(g2, np.random.default_rng(0).normal(size=(3, 3, 32, 32))))
    assert out.shape == (3, 10) and out.dtype == np.int8


def test_unsupported_ops_name_the_node_and_the_supported_ops() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Hardswish())
    with pytest.raises(UnsupportedOpError, match=r"node '_1' \(module:Hardswish\).*supported: .*module:Conv2d"):
        convert_to_int8(model, torch.randn(2, 3, 8, 8))
    grouped = nn.Sequential(nn.Conv2d(4, 8, 3, groups=2))
    with pytest.raises(UnsupportedOpError, match="groups=2"):
        convert_to_int8(grouped, torch.randn(2, 4, 8, 8))
    se = M.build(ArchSpec("mcunet", {"se": True})).eval()
    with pytest.raises(UnsupportedOpError, match=r"node '.*'"):
        convert_to_int8(se, torch.randn(2, 3, 32, 32))
    lone_relu = nn.Sequential(nn.ReLU(), nn.Conv2d(3, 4, 1))
    with pytest.raises(UnsupportedOpError, match="must directly follow"):
        convert_to_int8(lone_relu, torch.randn(2, 3, 8, 8))


def test_converter_contract_and_range_estimators() -> None:
    conv = Int8Converter("ema")
    with pytest.raises(NotFittedError):
        _ = conv.graph
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert conv.calibrate(model, torch.randn(16, 3, 8, 8)) is conv and len(conv.graph.ops) == 1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model is not changed
    for name in RANGE_ESTIMATORS.names():
        est = RANGE_ESTIMATORS.get(name)()
        with pytest.raises(NotFittedError):
            est.range()
        est.update(np.array([1.0, 3.0]))
        est.update(np.array([-2.0, 5.0]))
        lo, hi = est.range()
        assert -2.0 <= lo <= 1.0 and 3.0 <= hi <= 5.0
    scale, zp = qparams_from_range(0.5, 2.0)  # the range is widened to hold real 0 exactly
    assert zp == -128 and scale == pytest.approx(2.0 / 255)
