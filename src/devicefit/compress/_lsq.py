"""Quantization-aware training with learned step size (LSQ, Esser et al., ICLR 2020) at 2..8 bits, simulated
in PyTorch (fake quantization): every Conv2d/Linear quantizes its weights (signed, per output channel) and its
input (unsigned when non-negative on the calibration batch, else signed), each with a trained step size."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from devicefit.core import ConfigError, DataError, NotFittedError

from ._registry import QUANTIZERS

__all__ = ["LSQConfig", "LSQFakeQuant", "LSQQuantizer", "QuantWrapper", "check_bits", "quant_layers"]

Finetune = Callable[[nn.Module], nn.Module]


def check_bits(name: str, bits: object) -> int:
    """`bits` as an int in 2..8, else ConfigError naming `name` (no runtime here has kernels outside that)."""
    if not isinstance(bits, int) or isinstance(bits, bool) or not 2 <= bits <= 8:
        raise ConfigError(f"{name} must be an int in 2..8, got {bits!r}")
    return bits


def _round_pass(x: torch.Tensor) -> torch.Tensor:
    return (x.round() - x).detach() + x  # straight-through estimator


def _grad_scale(x: torch.Tensor, g: float) -> torch.Tensor:
    return (x - x * g).detach() + x * g  # value x, gradient scaled by g (LSQ eq. 4)


class LSQFakeQuant(nn.Module):
    """x → round(clamp(x / s, Qn, Qp)) · s with a learned step `s` (one per channel along dim 0, or one);
    `init_(x)` sets s = 2·mean|x| / sqrt(Qp) (LSQ §2.1)."""

    def __init__(self, bits: int, signed: bool, channels: int = 1) -> None:
        super().__init__()
        self.bits, self.signed = check_bits("bits", bits), signed
        self.qn = -(2 ** (bits - 1)) + 1 if signed else 0  # symmetric signed grid (no -2^(b-1))
        self.qp = 2 ** (bits - 1) - 1 if signed else 2 ** bits - 1
        self.step = nn.Parameter(torch.ones(channels))

    @torch.no_grad()
    def init_(self, x: torch.Tensor) -> None:
        dims = tuple(range(1, x.dim())) if self.step.numel() > 1 else tuple(range(x.dim()))
        self.step.copy_((2 * x.abs().mean(dim=dims) / math.sqrt(self.qp)).clamp_min(1e-8).reshape(self.step.shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = 1.0 / math.sqrt(x[0].numel() * self.qp) if self.step.numel() > 1 else 1.0 / math.sqrt(x.numel() * self.qp)
        s = _grad_scale(self.step, g)
        s = s.view(-1, *([1] * (x.dim() - 1))) if self.step.numel() > 1 else s
        return _round_pass(torch.clamp(x / s, self.qn, self.qp)) * s


class QuantWrapper(nn.Module):
    """A Conv2d or Linear whose input and weight pass through LSQ fake quantizers."""

    def __init__(self, layer: nn.Conv2d | nn.Linear, weight_bits: int, act_bits: int | None) -> None:
        super().__init__()
        self.layer = layer
        self.weight_q = LSQFakeQuant(weight_bits, signed=True, channels=layer.weight.shape[0])
        self.act_bits = act_bits
        self.act_q: LSQFakeQuant | None = None

    def init_(self, x: torch.Tensor) -> None:
        self.weight_q.init_(self.layer.weight.detach())
        if self.act_bits is not None:
            self.act_q = LSQFakeQuant(self.act_bits, signed=bool((x < 0).any()))
            self.act_q.init_(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_q is not None:
            x = self.act_q(x)
        w = self.weight_q(self.layer.weight)
        if isinstance(self.layer, nn.Conv2d):
            c = self.layer
            return F.conv2d(x, w, c.bias, c.stride, c.padding, c.dilation, c.groups)
        return F.linear(x, w, self.layer.bias)


def quant_layers(model: nn.Module) -> list[str]:
    """Names of the Conv2d/Linear layers LSQ quantizes, in module order."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]


@dataclass(frozen=True)
class LSQConfig:
    """weight_bits / act_bits: 2..8 for every layer (act_bits None: activations stay float);
    first_last_bits: bits of the first and last layer (8 is the usual choice; None = same as the rest);
    bits_per_layer: {layer name: weight bits} overrides (mixed precision from `choose_bit_widths`)."""

    weight_bits: int = 4
    act_bits: int | None = 4
    first_last_bits: int | None = 8
    bits_per_layer: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_bits("weight_bits", self.weight_bits)
        for name in ("act_bits", "first_last_bits"):
            if getattr(self, name) is not None:
                check_bits(name, getattr(self, name))
        for layer, bits in self.bits_per_layer.items():
            check_bits(f"bits_per_layer[{layer!r}]", bits)


@QUANTIZERS.register("lsq")
class LSQQuantizer:
    """Estimator: `fit(model, x, finetune=None)` wraps the layers of a copy with LSQ quantizers, initialises
    the steps on the calibration batch `x` (N, C, H, W), runs `finetune(model) -> model` (the QAT loop,
    injected: e.g. `devicefit.train.fit` with a teacher) and stores `model_`, `bits_` (layer → weight bits)."""

    def __init__(self, config: LSQConfig | None = None) -> None:
        self.config = config or LSQConfig()

    def _bits(self, names: list[str]) -> dict[str, tuple[int, int | None]]:
        cfg = self.config
        unknown = sorted(set(cfg.bits_per_layer) - set(names))
        if unknown:
            raise ConfigError(f"bits_per_layer names unknown layer(s) {unknown[:5]}; layers: {names[:8]}...")
        out = {}
        for i, n in enumerate(names):
            edge = cfg.first_last_bits is not None and i in (0, len(names) - 1)
            w = cfg.bits_per_layer.get(n, cfg.first_last_bits if edge else cfg.weight_bits)
            a = None if cfg.act_bits is None else (cfg.first_last_bits if edge else cfg.act_bits)
            out[n] = (int(w), a)  # type: ignore[arg-type]
        return out

    def fit(self, model: nn.Module, x: torch.Tensor, finetune: Finetune | None = None) -> LSQQuantizer:
        if not isinstance(x, torch.Tensor) or x.dim() < 2 or len(x) == 0:
            raise DataError(f"LSQ calibration batch must be a non-empty (N, ...) tensor, got {type(x).__name__}")
        net = copy.deepcopy(model).eval()
        names = quant_layers(net)
        bits = self._bits(names)
        wrappers = {n: QuantWrapper(net.get_submodule(n), *bits[n]) for n in names}
        _init_steps(net, wrappers, x)
        for n, w in wrappers.items():
            parent, _, leaf = n.rpartition(".")
            setattr(net.get_submodule(parent) if parent else net, leaf, w)
        if finetune is not None:
            net = finetune(net)
        self.model_, self.bits_ = net.eval(), {n: b[0] for n, b in bits.items()}
        return self

    @property
    def model(self) -> nn.Module:
        if not hasattr(self, "model_"):
            raise NotFittedError("LSQQuantizer is not fitted; call fit(model, x) first")
        return self.model_


@torch.no_grad()
def _init_steps(net: nn.Module, wrappers: Mapping[str, QuantWrapper], x: torch.Tensor) -> None:
    handles = [net.get_submodule(n).register_forward_pre_hook(lambda _m, a, w=w: w.init_(a[0]))
               for n, w in wrappers.items()]
    try:
        net(x)
    except RuntimeError as e:
        raise DataError(f"calibration batch of shape {tuple(x.shape)} does not fit the model: {e}") from e
    finally:
        for h in handles:
            h.remove()
