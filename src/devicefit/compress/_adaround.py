"""AdaRound (Nagel et al., ICML 2020): learn, layer by layer, whether each weight rounds up or down so that the
layer's output on calibration data moves least — what makes 4-bit weights usable after training.

Per layer: W̃ = s · clamp(floor(W / s) + h(V), -qmax, qmax) with the rectified sigmoid h (eq. 23) and loss
‖W x − W̃ x‖² + λ Σ (1 − |2h(V) − 1|^β), β annealed from 20 to 2 (eq. 24–25); afterwards h is hardened to 0/1.
The grid is the one `write_qdq` uses (symmetric, max|w| / qmax), so the ONNX QDQ model holds exactly these values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from devicefit.core import ConfigError

__all__ = ["adaround_"]

ZETA, GAMMA = 1.1, -0.1  # stretch of the rectified sigmoid (eq. 23)


def _h(v: torch.Tensor) -> torch.Tensor:
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def _grid(w: torch.Tensor, bits: int, per_channel: bool) -> tuple[torch.Tensor, int]:
    qmax = 2 ** (bits - 1) - 1
    absmax = w.abs().reshape(w.shape[0], -1).amax(dim=1) if per_channel else w.abs().amax().expand(w.shape[0])
    return (absmax / qmax).clamp_min(1e-12).view(-1, *([1] * (w.dim() - 1))), qmax


def _apply(layer: nn.Module, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, nn.Conv2d):
        return F.conv2d(x, w, layer.bias, layer.stride, layer.padding, layer.dilation, layer.groups)
    return F.linear(x, w, layer.bias)


def _round_layer(layer: nn.Conv2d | nn.Linear, x: torch.Tensor, bits: int, per_channel: bool, iters: int,
                 reg: float) -> None:
    w = layer.weight.detach()
    s, qmax = _grid(w, bits, per_channel)
    floor = torch.floor(w / s)
    rest = (w / s - floor).clamp(1e-4, 1 - 1e-4)
    v = nn.Parameter(-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1))  # h(v) = rest: start at the float value
    with torch.no_grad():
        target = _apply(layer, x, w)
    opt = torch.optim.Adam([v], lr=1e-2)
    for i in range(iters):
        beta = 20 - (20 - 2) * i / max(iters - 1, 1)
        soft = s * torch.clamp(floor + _h(v), -qmax, qmax)
        rec = (_apply(layer, x, soft) - target).pow(2).mean()
        round_loss = (1 - (2 * _h(v) - 1).abs().pow(beta)).sum() if i >= iters // 5 else v.sum() * 0
        loss = rec + reg * round_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        layer.weight.copy_(s * torch.clamp(floor + (_h(v) >= 0.5).float(), -qmax, qmax))


@torch.no_grad()
def _layer_inputs(model: nn.Module, x: torch.Tensor) -> dict[nn.Module, torch.Tensor]:
    inputs: dict[nn.Module, torch.Tensor] = {}
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    handles = [m.register_forward_pre_hook(lambda mod, a: inputs.__setitem__(mod, a[0].detach())) for m in layers]
    try:
        model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return inputs


def adaround_(model: nn.Module, x: torch.Tensor, *, bits: int = 4, per_channel: bool = True, iters: int = 300,
              reg: float = 0.01) -> int:
    """Replace, in place, the weights of every Conv2d/Linear of `model` (BatchNorm already folded) by their
    AdaRound-ed `bits`-bit values, learned on calibration inputs `x` (each layer sees its float-model input).
    Returns the number of layers rounded. `bits` in 2..8; `iters` Adam steps per layer."""
    if not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ConfigError(f"bits must be an int in 2..8, got {bits!r}")
    if not isinstance(iters, int) or iters < 1:
        raise ConfigError(f"iters must be an int >= 1, got {iters!r}")
    inputs = _layer_inputs(model, x)
    with torch.enable_grad():
        for layer, inp in inputs.items():
            _round_layer(layer, inp, bits, per_channel, iters, reg)
    return len(inputs)
