"""Mixed precision: per-layer weight bit widths chosen from measured sensitivity under a model-size budget.

Sensitivity of a layer at b bits = KL(softmax(fp32 logits) || softmax(logits with only that layer's weights
rounded to b bits, per channel)) on a calibration batch. The choice starts every layer at the widest width and
greedily narrows the layer with the least added sensitivity per byte saved until the weights fit the budget.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from devicefit.core import BudgetError, ConfigError

from ._lsq import check_bits, quant_layers

__all__ = ["choose_bit_widths", "layer_sensitivity", "weight_bytes"]


def _rounded(w: torch.Tensor, bits: int) -> torch.Tensor:
    qmax = 2 ** (bits - 1) - 1
    s = (w.abs().reshape(w.shape[0], -1).amax(dim=1) / qmax).clamp_min(1e-12).view(-1, *([1] * (w.dim() - 1)))
    return torch.clamp(torch.round(w / s), -qmax, qmax) * s


@torch.no_grad()
def layer_sensitivity(model: nn.Module, x: torch.Tensor,
                      bits: Sequence[int] = (2, 4, 8)) -> dict[str, dict[int, float]]:
    """{layer: {bits: mean KL of the output when only that layer's weights are rounded to `bits`}}."""
    widths = [check_bits("bits", b) for b in bits]
    model.eval()
    ref = F.log_softmax(model(x), dim=1)
    out: dict[str, dict[int, float]] = {}
    for name in quant_layers(model):
        layer = model.get_submodule(name)
        original = layer.weight.detach().clone()
        out[name] = {}
        try:
            for b in widths:
                layer.weight.copy_(_rounded(original, b))
                q = F.log_softmax(model(x), dim=1)
                out[name][b] = float(F.kl_div(q, ref, log_target=True, reduction="batchmean"))
        finally:
            layer.weight.copy_(original)
    return out


def weight_bytes(model: nn.Module, bits: Mapping[str, int]) -> float:
    """Bytes of the quantized weights of the layers in `bits` (numel · bits / 8; scales not counted)."""
    return sum(model.get_submodule(n).weight.numel() * b / 8 for n, b in bits.items())


def choose_bit_widths(model: nn.Module, sensitivity: Mapping[str, Mapping[int, float]],
                      budget_bytes: float) -> dict[str, int]:
    """Per-layer weight bits (from the widths measured in `sensitivity`) whose `weight_bytes` fit `budget_bytes`,
    narrowing greedily by least sensitivity increase per byte saved. Unreachable budget → BudgetError."""
    if not sensitivity:
        raise ConfigError("sensitivity is empty: measure it with layer_sensitivity(model, x)")
    if budget_bytes <= 0:
        raise ConfigError(f"budget_bytes must be > 0, got {budget_bytes!r}")
    choice = {n: max(s) for n, s in sensitivity.items()}
    floor = weight_bytes(model, {n: min(s) for n, s in sensitivity.items()})
    if floor > budget_bytes:
        raise BudgetError(f"model-size budget {budget_bytes:,.0f} bytes is below the smallest reachable "
                          f"{floor:,.0f} bytes (every layer at its narrowest width)")
    while weight_bytes(model, choice) > budget_bytes:
        name, nb = min(_moves(model, sensitivity, choice), key=lambda t: t[2])[:2]
        choice[name] = nb
    return choice


def _moves(model: nn.Module, sens: Mapping[str, Mapping[int, float]], choice: Mapping[str, int]) -> list:
    moves = []
    for n, b in choice.items():
        narrower = [w for w in sens[n] if w < b]
        if narrower:
            nb = max(narrower)
            saved = model.get_submodule(n).weight.numel() * (b - nb) / 8
            moves.append((n, nb, (sens[n][nb] - sens[n][b]) / saved))
    return moves
