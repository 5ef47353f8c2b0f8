"""Weight quantization of a `Llama`'s block matrices: the typed config, the registry of methods
(round-to-nearest here; GPTQ and AWQ register themselves), and the result with its memory cost."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from devicefit.core import ConfigError, NotFittedError, Registry, check_choice

from ._grids import Grid, grid_name, parse_grid
from ._groupq import QuantizedMatrix, quantize_matrix
from ._model import Llama, linear_names
from ._tune import ScaleTuneConfig, tune_scales_

__all__ = [
    "QUANTIZERS",
    "QuantizedLlama",
    "RTNQuantizer",
    "WeightQuantConfig",
    "block_bits_per_weight",
    "get_linear",
    "quantize_llama",
    "weight_bytes",
]


@dataclass(frozen=True)
class WeightQuantConfig:
    """What to quantize and how.

    `format`: a grid (`q8_0|q4_0|q4_1|q5_0` or `int<b>-g<G>|row-sym|asym|absmax`); `method`: a
    registered quantizer (`rtn`, `gptq`, `awq`); `on_ragged`: when the group size does not divide
    a row: `error`, `ragged` (shorter last group, in-memory only) or `keep` (leave that matrix in
    float, as llama.cpp falls back). GPTQ: `damp` (fraction of mean Hessian diagonal),
    `act_order` (columns by descending Hessian diagonal), `block_size`, `clip_search` (each
    group's range shrunk by the ratio minimizing its |w - Q(w)|^2.4, GPTQ's `mse` option),
    `static_groups` (group scales from the original weights rather than the updated ones). AWQ: `awq_grid` alpha steps,
    `awq_clip` (search a clipping ratio per matrix), `max_calib_tokens` rows used in its searches.
    Any method: `tune_epochs` > 0 then tunes the stored scales/mins end to end against the
    unquantized model on the calibration sequences (codes fixed; see `tune_scales_`), at `tune_lr`,
    with `tune_norms` the RMSNorm gains too.
    """

    format: str = "int4-g32-asym"
    method: str = "rtn"
    on_ragged: str = "error"
    damp: float = 0.01
    act_order: bool = True
    block_size: int = 128
    awq_grid: int = 20
    awq_clip: bool = True
    clip_search: bool = True
    static_groups: bool = False
    max_calib_tokens: int = 4096
    tune_epochs: int = 0
    tune_lr: float = 2e-3
    tune_norms: bool = False

    def __post_init__(self) -> None:
        parse_grid(self.format)
        check_choice("on_ragged", self.on_ragged, ("error", "ragged", "keep"))
        if not 0 <= self.damp < 1:
            raise ConfigError(f"damp must be in [0, 1), got {self.damp}")
        if self.tune_epochs < 0 or not self.tune_lr > 0:
            raise ConfigError(f"tune_epochs must be >= 0 and tune_lr > 0, got {self.tune_epochs}, {self.tune_lr}")
        for name in ("block_size", "awq_grid", "max_calib_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def grid(self) -> Grid:
        return parse_grid(self.format)


@dataclass
class QuantizedLlama:
    """A quantized copy of a model: `model` holds the dequantized weights (so it runs as is),
    `matrices` the codes per quantized Linear (None = kept in float), `config` how."""

    model: Llama
    matrices: dict[str, QuantizedMatrix | None]
    config: WeightQuantConfig
    notes: list[str] = field(default_factory=list)

    @property
    def format_name(self) -> str:
        return grid_name(self.config.grid)

    def bits_per_weight(self) -> float:
        """Bits per weight over the block matrices (float fallbacks count at 16 bits)."""
        bits = n = 0.0
        for name, qm in self.matrices.items():
            k = get_linear(self.model, name).weight.numel()
            bits += k * (qm.bits_per_weight if qm is not None else 16.0)
            n += k
        return bits / n


def get_linear(model: Llama, name: str) -> torch.nn.Linear:
    mod = model.get_submodule(name)
    if not isinstance(mod, torch.nn.Linear):
        raise ConfigError(f"{name} is not a Linear layer of the model")
    return mod


def weight_bytes(model: Llama, matrices: dict[str, QuantizedMatrix | None] | None = None,
                 float_bytes: int = 4, fallback_bytes: int = 2) -> int:
    """Bytes of all weights: quantized matrices at their bits per weight (codes + fp16 scales),
    float fallbacks at `fallback_bytes`, every other parameter (embeddings, norms) at `float_bytes`."""
    matrices = matrices or {}
    total = 0
    for name, p in model.named_parameters():  # a tied classifier appears once
        key = name.removesuffix(".weight")
        qm = matrices.get(key, "float")
        if qm == "float":
            total += p.numel() * float_bytes
        elif qm is None:
            total += p.numel() * fallback_bytes
        else:
            total += math.ceil(p.numel() * qm.bits_per_weight / 8)
    return total


QUANTIZERS: Registry[type] = Registry("weight quantizer")


class _Base:
    """Estimator contract: `__init__` stores the config; `fit(model, calib_seqs)` learns
    `matrices_` (and method state) and returns self; `transform(model)` returns a
    `QuantizedLlama` copy and never changes `model`."""

    needs_calibration = False

    def __init__(self, config: WeightQuantConfig) -> None:
        self.config = config

    def transform(self, model: Llama) -> QuantizedLlama:
        if not hasattr(self, "matrices_"):
            raise NotFittedError(f"{type(self).__name__}.transform called before fit")
        out = copy.deepcopy(model)
        self._apply_extra(out)
        with torch.no_grad():
            for name, qm in self.matrices_.items():
                lin = get_linear(out, name)
                if qm is not None and lin.weight.shape != qm.codes.shape:
                    raise ConfigError(f"{name}: fitted on shape {tuple(qm.codes.shape)}, "
                                      f"model has {tuple(lin.weight.shape)}")
                lin.weight.copy_(qm.dequantize() if qm is not None else lin.weight.half().float())
        return QuantizedLlama(out, dict(self.matrices_), self.config, list(getattr(self, "notes_", [])))

    def _apply_extra(self, model: Llama) -> None:
        """Method-specific changes to the copy before weights are written (AWQ scale folding)."""

    def _quantize_one(self, name: str, w: torch.Tensor, note: bool = True) -> QuantizedMatrix | None:
        """RTN one matrix, honouring `on_ragged`; None = keep in float (noted in `notes_`)."""
        grid, cols = self.config.grid, w.shape[1]
        ragged = bool(grid.group_size) and cols % grid.group_size != 0
        if ragged and self.config.on_ragged == "keep":
            if note:
                self.notes_.append(f"{name}: row length {cols} is not a multiple of {grid.group_size}; kept in fp16")
            return None
        return quantize_matrix(w, grid, ragged=self.config.on_ragged == "ragged", name=name)


@QUANTIZERS.register("rtn")
class RTNQuantizer(_Base):
    """Round-to-nearest, group-wise, no calibration."""

    def fit(self, model: Llama, calib_seqs: list[list[int]] | None = None) -> RTNQuantizer:
        self.notes_: list[str] = []
        self.matrices_ = {n: self._quantize_one(n, get_linear(model, n).weight) for n in linear_names(model)}
        return self


def quantize_llama(model: Llama, config: WeightQuantConfig,
                   calib_seqs: list[list[int]] | None = None) -> QuantizedLlama:
    """Quantize the block matrices of a copy of `model` with `config.method` (input untouched),
    then, with `config.tune_epochs`, tune the scales/mins against `model` on `calib_seqs`."""
    cls = QUANTIZERS.get(config.method)
    if (cls.needs_calibration or config.tune_epochs) and not calib_seqs:
        raise ConfigError(f"method {config.method!r} (tune_epochs {config.tune_epochs}) needs calibration "
                          "sequences, got none")
    q = cls(config).fit(model, calib_seqs).transform(model)
    if config.tune_epochs:
        hist = tune_scales_(q.model, q.matrices, model, calib_seqs or [],
                            ScaleTuneConfig(epochs=config.tune_epochs, lr=config.tune_lr,
                                            tune_norms=config.tune_norms))
        q.notes.append(f"scales tuned {config.tune_epochs} epochs: calibration KL {hist[0]:.4f} -> {hist[-1]:.4f} nats")
    return q


def block_bits_per_weight(model: Llama, matrices: dict[str, Any]) -> float:
    """Mean bits per weight of the block matrices: quantized at their rate, fp16 fallbacks
    (None) at 16, matrices not listed at 32."""
    bits = n = 0.0
    for name in linear_names(model):
        k = model.get_submodule(name).weight.numel()
        qm = matrices.get(name, "f32")
        bits += k * (32.0 if qm == "f32" else 16.0 if qm is None else qm.bits_per_weight)
        n += k
    return bits / n
