"""Post-training int8: calibrators (each registered one), BN folding, CLE, bias correction, the QDQ writer and
that ONNX Runtime really runs the convolutions in int8 with outputs close to fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from devicefit.compress import (
    CALIBRATORS,
    FLOAT_COMPUTE_OPS,
    PostTrainingQuantizer,
    PTQConfig,
    TensorHistogram,
    bias_correct_,
    equalize_,
    evaluate_onnx,
    fold_batchnorm,
    list_calibrators,
    make_calibrator,
    relu6_to_relu_,
    runtime_op_counts,
)
from devicefit.compress._onnx_run import _session
from devicefit.core import ConfigError, DataError, NotFittedError
from devicefit.models import MODELS, build, default_spec, list_models
from devicefit.nn import export_onnx

SHAPE = (3, 16, 16)


def _tiny(name: str = "mobilenet_v2", **kw: object) -> nn.Module:
    torch.manual_seed(0)
    model = build(default_spec(name, input_shape=SHAPE, **kw)).eval()
    for m in model.modules():  # non-trivial BN statistics so folding is tested
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    return model


def _calib(n: int = 32) -> torch.Tensor:
    return torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(1))


# --- calibrators ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list_calibrators())
def test_every_calibrator_contains_zero_and_stays_inside_observed_range(name: str) -> None:
    rng = np.random.default_rng(0)
    for values in (np.maximum(rng.standard_normal(20000), 0), rng.standard_normal(20000) + 0.5):
        hist = TensorHistogram.from_values(values)
        low, high = make_calibrator(name).fit(hist).range
        assert low <= 0.0 <= high and high > 0
        assert low >= values.min() - 1e-3 and high <= values.max() + 1e-3


@pytest.mark.parametrize("name", list_calibrators())
def test_every_calibrator_raises_when_unfitted(name: str) -> None:
    with pytest.raises(NotFittedError, match="not fitted"):
        _ = make_calibrator(name).range


def test_minmax_is_exact_and_clipping_calibrators_cut_outliers() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([np.maximum(rng.standard_normal(100000), 0), [50.0]])  # one far outlier
    hist = TensorHistogram.from_values(values)
    assert make_calibrator("minmax").fit(hist).range[1] == pytest.approx(50.0, rel=1e-3)
    assert make_calibrator("percentile", percentile=99.9).fit(hist).range[1] < 5.0
    assert make_calibrator("entropy").fit(hist).range[1] < 10.0


def test_unknown_calibrator_is_a_config_error_naming_the_choices() -> None:
    with pytest.raises(ConfigError, match="minmax"):
        PTQConfig(calibrator="kl-magic")
    assert set(CALIBRATORS.names()) >= {"minmax", "percentile", "mse", "entropy"}


# --- PyTorch rewrites -------------------------------------------------------------------------------------


def test_fold_batchnorm_keeps_the_function_and_removes_bn() -> None:
    model, x = _tiny(), _calib(4)
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # input untouched


def test_equalization_keeps_the_function_and_balances_channel_ranges() -> None:
    model, x = _tiny(act="relu"), _calib(4)
    gm = fold_batchnorm(model)
    ref = gm(x)
    dw = next(m for m in gm.modules() if isinstance(m, nn.Conv2d) and m.groups > 1)
    spread_before = _spread(dw)
    assert equalize_(gm) > 0
    torch.testing.assert_close(gm(x), ref, rtol=1e-3, atol=1e-3)
    assert _spread(dw) < spread_before


def _spread(conv: nn.Conv2d) -> float:
    r = conv.weight.detach().abs().reshape(conv.out_channels, -1).amax(dim=1)
    return float(r.max() / r.min().clamp_min(1e-12))


def test_relu6_to_relu_replaces_every_relu6() -> None:
    gm = fold_batchnorm(_tiny())
    n = relu6_to_relu_(gm)
    assert n > 0 and not any(isinstance(m, nn.ReLU6) for m in gm.modules())


def test_bias_correction_reduces_the_mean_output_shift_of_weight_rounding() -> None:
    torch.manual_seed(0)
    x = torch.rand(64, 8, 6, 6) + 0.5  # positive mean inputs: rounding errors shift outputs
    layer = nn.Conv2d(8, 4, 3)
    gm = torch.fx.symbolic_trace(nn.Sequential(layer))
    ref = gm(x).mean(dim=(0, 2, 3))

    def quantized_mean(module: nn.Module) -> torch.Tensor:
        conv = module.get_submodule("0")
        w = conv.weight.detach()
        s = w.abs().reshape(4, -1).amax(1).view(-1, 1, 1, 1) / 7
        return nn.functional.conv2d(x, torch.round(w / s) * s, conv.bias).mean(dim=(0, 2, 3))

    err_before = (quantized_mean(gm) - ref).abs().mean()
    bias_correct_(gm, x, bits=4)
    err_after = (quantized_mean(gm) - ref).abs().mean()
    assert err_after < 0.2 * err_before


# --- QDQ model --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, PostTrainingQuantizer]:
    tmp = tmp_path_factory.mktemp("ptq")
    model = _tiny()
    fp32 = export_onnx(model, SHAPE, tmp / "fp32.onnx", dynamic_batch=True)
    q = PostTrainingQuantizer(PTQConfig(calibrator="percentile")).calibrate(model, _calib(), SHAPE)
    return fp32, q.save(tmp / "int8.onnx"), q


def test_qdq_model_runs_every_conv_in_int8(quantized: tuple[Path, Path, PostTrainingQuantizer]) -> None:
    _, int8, _ = quantized
    ops = runtime_op_counts(int8)
    n_convs = sum(1 for n in onnx.load(str(int8)).graph.node if n.op_type == "Conv")
    assert ops.get("QLinearConv", 0) == n_convs > 0
    assert not FLOAT_COMPUTE_OPS & set(ops), ops


def test_a_conv_that_writes_the_graph_output_runs_in_int8_and_keeps_the_output_name(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1)).eval()
    x = _calib()
    fp32 = export_onnx(model, SHAPE, tmp_path / "fp32.onnx", dynamic_batch=True)
    int8 = PostTrainingQuantizer(PTQConfig()).calibrate(model, x, SHAPE).save(tmp_path / "int8.onnx")
    ops = runtime_op_counts(int8)
    assert ops.get("QLinearConv", 0) == 2 and not FLOAT_COMPUTE_OPS & set(ops), ops
    assert [o.name for o in onnx.load(str(int8)).graph.output] == [o.name for o in onnx.load(str(fp32)).graph.output]
    ref = model(x).detach().numpy()
    out = _session(int8).run(None, {"input": x.numpy()})[0]
    assert out.shape == ref.shape and np.abs(out - ref).max() < 0.05 * np.abs(ref).max()


class _TwoHeads(nn.Module):
    """The first Conv's output is a graph output and also feeds the second Conv."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.a(x)
        return y, self.b(torch.relu(y))


def test_a_graph_output_that_another_conv_reads_stays_connected(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, x = _TwoHeads().eval(), _calib()
    int8 = PostTrainingQuantizer(PTQConfig()).calibrate(model, x, SHAPE).save(tmp_path / "int8.onnx")
    ops = runtime_op_counts(int8)
    assert ops.get("QLinearConv", 0) == 2 and not FLOAT_COMPUTE_OPS & set(ops), ops
    outs = _session(int8).run(None, {"input": x.numpy()})
    for out, ref in zip(outs, (t.detach().numpy() for t in model(x)), strict=True):
        assert out.shape == ref.shape and np.abs(out - ref).max() < 0.05 * np.abs(ref).max()


def test_qdq_weights_are_int8_per_channel_and_file_is_about_4x_smaller(
        quantized: tuple[Path, Path, PostTrainingQuantizer]) -> None:
    fp32, int8, _ = quantized
    proto = onnx.load(str(int8))
    weight_dqs = [n for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.name.endswith("weight_DQ")]
    inits = {i.name: i for i in proto.graph.initializer}
    assert weight_dqs and all(inits[n.input[0]].data_type == onnx.TensorProto.INT8 for n in weight_dqs)
    assert all(len(onnx.numpy_helper.to_array(inits[n.input[1]]).shape) == 1 for n in weight_dqs)
    assert int8.stat().st_size < fp32.stat().st_size / 2.5  # scales and zero points cost a little


def test_int8_outputs_track_fp32(quantized: tuple[Path, Path, PostTrainingQuantizer]) -> None:
    fp32, int8, _ = quantized
    x = torch.randn(64, *SHAPE, generator=torch.Generator().manual_seed(7)).numpy()
    a = _session(fp32).run(None, {"input": x})[0]
    b = _session(int8).run(None, {"input": x})[0]
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95
    assert (a.argmax(1) == b.argmax(1)).mean() > 0.7


def test_evaluate_onnx_matches_torch_on_real_images(quantized: tuple[Path, Path, PostTrainingQuantizer]) -> None:
    from devicefit.data import ArrayDataset

    rng = np.random.default_rng(0)
    ds = ArrayDataset("toy", "test", rng.integers(0, 256, (40, *SHAPE), dtype=np.uint8), rng.integers(0, 10, 40),
                      tuple("abcdefghij"), "generated", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    from devicefit.train import evaluate

    fp32, _, _ = quantized
    model = _tiny()
    assert evaluate_onnx(fp32, ds)["accuracy"] == pytest.approx(evaluate(model, ds)["accuracy"])


def test_calibration_data_of_the_wrong_shape_is_a_data_error() -> None:
    with pytest.raises(DataError, match=r"\(N, 3, 16, 16\).*\(8, 3, 32, 32\)"):
        PostTrainingQuantizer().calibrate(_tiny(), torch.zeros(8, 3, 32, 32), SHAPE)


@pytest.mark.parametrize("bits", [1, 9, 16])
def test_a_bit_width_the_backend_cannot_run_is_a_config_error(bits: int) -> None:
    with pytest.raises(ConfigError, match=f"weight_bits.*got {bits}"):
        PTQConfig(weight_bits=bits)


def test_save_before_calibrate_raises_not_fitted(tmp_path: Path) -> None:
    with pytest.raises(NotFittedError):
        PostTrainingQuantizer().save(tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_calibrate_does_not_modify_the_input_model() -> None:
    model = _tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    PostTrainingQuantizer(PTQConfig(equalize=True, bias_correction=True, per_channel=False)).calibrate(
        model, _calib(16), SHAPE)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any(isinstance(m, nn.ReLU6) for m in model.modules())


# --- AdaRound ---------------------------------------------------------------------------------------------


def test_adaround_beats_nearest_rounding_on_the_layer_output_and_stays_on_the_grid() -> None:
    from devicefit.compress import adaround_

    torch.manual_seed(0)
    layer = nn.Conv2d(8, 8, 3, padding=1)
    x = torch.randn(16, 8, 8, 8).abs() + 0.5  # correlated, positive inputs (post-ReLU-like)
    ref = layer(x).detach()
    w = layer.weight.detach().clone()
    s = (w.abs().reshape(8, -1).amax(1) / 7).view(-1, 1, 1, 1)
    nearest = nn.functional.conv2d(x, torch.round(w / s) * s, layer.bias, padding=1)
    model = nn.Sequential(layer)
    assert adaround_(model, x, bits=4, iters=100) == 1
    k = layer.weight.detach() / s
    assert torch.allclose(k, k.round(), atol=1e-4) and k.abs().max() <= 7 + 1e-4
    assert (layer(x) - ref).pow(2).mean() < 0.8 * (nearest - ref).pow(2).mean()


def test_adaround_rejects_bit_widths_it_cannot_deploy() -> None:
    from devicefit.compress import adaround_

    with pytest.raises(ConfigError, match="bits"):
        adaround_(nn.Sequential(nn.Linear(4, 4)), torch.zeros(2, 4), bits=1)


# --- every zoo model --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", [m.name for m in list_models()])
def test_every_zoo_model_quantizes_with_every_conv_in_int8(name: str, tmp_path: Path) -> None:
    info = MODELS.get(name)
    shape = SHAPE if info.input_kind == "image" else tuple(info.defaults["input_shape"])
    torch.manual_seed(0)
    model = build(default_spec(name, input_shape=shape)).eval()
    x = torch.randn(8, *shape, generator=torch.Generator().manual_seed(1))
    path = PostTrainingQuantizer(PTQConfig(histogram_bins=256)).calibrate(model, x, shape).save(tmp_path / "q.onnx")
    ops = runtime_op_counts(path)
    n_convs = sum(1 for n in onnx.load(str(path)).graph.node if n.op_type == "Conv")
    assert ops.get("QLinearConv", 0) == n_convs and not FLOAT_COMPUTE_OPS & set(ops), ops
    out = _session(path).run(None, {"input": x.numpy()})[0]
    assert out.shape == (8, info.defaults["num_classes"]) and np.isfinite(out).all()
