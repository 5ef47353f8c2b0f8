"""Post-training int8 quantization to ONNX QDQ: fold BatchNorm, optional cross-layer equalization and bias
correction in PyTorch, export fp32 ONNX, calibrate every activation with a registered calibrator, write QDQ."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from devicefit.core import ConfigError, DataError, NotFittedError, atomic_write_bytes, check_positive, machine_info
from devicefit.data import ArrayDataset, to_float_tensor
from devicefit.nn import export_onnx

from ._adaround import adaround_
from ._calibrators import CALIBRATORS, make_calibrator
from ._fold import bias_correct_, equalize_, fold_batchnorm, relu6_to_relu_
from ._onnx_run import calibration_histograms
from ._qdq import fuse_activations, quantizable_tensors, write_qdq
from ._registry import QUANTIZERS

__all__ = ["PTQConfig", "PostTrainingQuantizer", "calibration_input", "effective_weight_bits", "needs_reduce_range"]


@dataclass(frozen=True)
class PTQConfig:
    """Settings of int8 post-training quantization.

    calibrator: a name in `CALIBRATORS` ("minmax", "percentile", "mse", "entropy"), `calibrator_options`
        its keyword arguments (e.g. {"percentile": 99.99}).
    per_channel: int8 weight scales per output channel (True) or one per tensor.
    weight_bits: weight grid ±(2^(bits-1) - 1), 2..8, stored as int8 (ONNX Runtime has no int4 conv).
    reduce_range: 8-bit weights on a 7-bit grid (±63); narrower widths are unaffected. None → on for x86
        CPUs without VNNI/AMX, where ONNX Runtime's u8×s8 kernels (AVX2 `vpmaddubsw`) saturate int16 sums of
        full-range weights; measured here: MobileNetV2 per-channel int8 lost 3.8 points at ±127 and 0.3 at ±63.
    equalize: cross-layer equalization (turns ReLU6 into ReLU first: DFQ's recipe; accuracy re-measured).
    bias_correction: subtract the expected output shift of weight rounding from each bias.
    adaround: learn each weight's rounding direction (AdaRound) on the calibration set, `adaround_iters`
        Adam steps per layer on at most `adaround_images` images; meant for weight_bits 4.
    histogram_bins, batch_size: calibration histogram resolution and ONNX Runtime batch.
    """

    calibrator: str = "minmax"
    calibrator_options: dict[str, Any] = field(default_factory=dict)
    per_channel: bool = True
    weight_bits: int = 8
    reduce_range: bool | None = None
    equalize: bool = False
    bias_correction: bool = False
    adaround: bool = False
    adaround_iters: int = 300
    adaround_images: int = 128
    histogram_bins: int = 2048
    batch_size: int = 64

    def __post_init__(self) -> None:
        CALIBRATORS.get(self.calibrator)  # unknown → ConfigError listing the names
        if not isinstance(self.weight_bits, int) or not 2 <= self.weight_bits <= 8:
            raise ConfigError(f"weight_bits must be an int in 2..8 (ONNX Runtime runs int8 kernels), "
                              f"got {self.weight_bits!r}")
        check_positive("histogram_bins", self.histogram_bins)
        check_positive("adaround_iters", self.adaround_iters)
        check_positive("adaround_images", self.adaround_images)
        check_positive("batch_size", self.batch_size)
        if self.reduce_range is not None and not isinstance(self.reduce_range, bool):
            raise ConfigError(f"reduce_range must be a bool or None (auto), got {self.reduce_range!r}")
        for name in ("per_channel", "equalize", "bias_correction", "adaround"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be a bool, got {getattr(self, name)!r}")


_DOT_PRODUCT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def needs_reduce_range() -> bool:
    """True on an x86 CPU without a u8×s8 dot-product instruction (VNNI/AMX), where ONNX Runtime's int8
    kernels may saturate; False on other CPUs (ARM, or x86 with VNNI)."""
    info = machine_info()
    x86 = any(f.startswith("avx") or f == "fma" for f in info.get("cpu_flags", []))
    return x86 and not any(f in info.get("cpu_flags", []) for f in _DOT_PRODUCT_FLAGS)


def effective_weight_bits(cfg: PTQConfig) -> int:
    """The weight grid actually used: `weight_bits`, one less under reduce_range (explicit or detected)."""
    reduce = needs_reduce_range() if cfg.reduce_range is None else cfg.reduce_range
    return 7 if reduce and cfg.weight_bits == 8 else cfg.weight_bits  # ±63·255·2 fits int16; below 8 bits all fit


def calibration_input(data: ArrayDataset | torch.Tensor | np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    """Calibration examples as a float32 (N, *input_shape) array (datasets normalised like training).
    A shape that does not match `input_shape` → DataError naming both."""
    if isinstance(data, ArrayDataset):
        x = to_float_tensor(data, data.x).numpy()
    elif isinstance(data, torch.Tensor):
        x = data.detach().cpu().float().numpy()
    elif isinstance(data, np.ndarray):
        x = data.astype(np.float32)
    else:
        raise DataError(f"calibration data must be an ArrayDataset, tensor or array, got {type(data).__name__}")
    if x.ndim != len(input_shape) + 1 or tuple(x.shape[1:]) != tuple(input_shape) or len(x) == 0:
        raise DataError(f"calibration data must have shape (N, {', '.join(map(str, input_shape))}) with N >= 1, "
                        f"got {tuple(x.shape)}")
    return x


@QUANTIZERS.register("ptq-int8")
class PostTrainingQuantizer:
    """Estimator: `calibrate(model, data, input_shape)` learns `prepared_` (the folded/equalised fp32 module),
    `ranges_` (tensor → (low, high)), `qdq_` (the QDQ ModelProto) and `report_`; `save(path)` writes
    `qdq_` atomically. The input `model` is never modified."""

    def __init__(self, config: PTQConfig | None = None) -> None:
        self.config = config or PTQConfig()

    def calibrate(self, model: nn.Module, data: ArrayDataset | torch.Tensor | np.ndarray,
                  input_shape: tuple[int, ...]) -> PostTrainingQuantizer:
        cfg = self.config
        x = calibration_input(data, tuple(input_shape))
        prepared, report = self._prepare(model, torch.from_numpy(x))
        with tempfile.TemporaryDirectory(prefix="devicefit-ptq-") as tmp:
            fp32 = onnx.load(str(export_onnx(prepared, input_shape, Path(tmp) / "fp32.onnx", dynamic_batch=True)))
        fused = fuse_activations(fp32)
        names = quantizable_tensors(fused)
        hists = calibration_histograms(fp32, x, names, bins=cfg.histogram_bins, batch_size=cfg.batch_size)
        self.ranges_ = {n: make_calibrator(cfg.calibrator, **cfg.calibrator_options).fit(h).range
                        for n, h in hists.items()}
        self.qdq_ = write_qdq(fused, self.ranges_, per_channel=cfg.per_channel, weight_bits=report["weight_grid_bits"])
        self.prepared_ = prepared
        self.report_ = {**report, "quantized_tensors": len(names), "n_calibration": len(x)}
        return self

    def _prepare(self, model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, dict[str, Any]]:
        cfg = self.config
        gm = fold_batchnorm(model)
        report: dict[str, Any] = {"relu6_replaced": 0, "equalized_pairs": 0, "bias_corrected_layers": 0,
                                  "weight_grid_bits": effective_weight_bits(cfg)}
        if cfg.equalize:
            report["relu6_replaced"] = relu6_to_relu_(gm)
            gm.recompile()
            report["equalized_pairs"] = equalize_(gm)
        if cfg.adaround:
            report["adarounded_layers"] = adaround_(gm, x[:cfg.adaround_images], bits=report["weight_grid_bits"],
                                                    per_channel=cfg.per_channel, iters=cfg.adaround_iters)
        if cfg.bias_correction:
            report["bias_corrected_layers"] = bias_correct_(gm, x, per_channel=cfg.per_channel,
                                                            bits=report["weight_grid_bits"])
        return gm.eval(), report

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the QDQ model to `path` (atomically)."""
        if not hasattr(self, "qdq_"):
            raise NotFittedError("PostTrainingQuantizer is not calibrated; call calibrate(model, data, input_shape)")
        return atomic_write_bytes(path, self.qdq_.SerializeToString())
