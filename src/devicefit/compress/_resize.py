"""Rebuilding a pruned network: resize the layers of a freshly built model to the shapes in a pruned state dict,
so pruned weights load without pickling modules (a pruned net is no longer described by its `ArchSpec`)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from devicefit.core import DataError

from ._depth import _bypass, removable_blocks

__all__ = ["load_pruned_state_", "pruned_shapes"]


def pruned_shapes(model: nn.Module) -> dict[str, list[int]]:
    """{parameter or buffer name: shape} of `model`: stored beside pruned weights as a readable record."""
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def _resized_conv(old: nn.Conv2d, w: torch.Tensor) -> nn.Conv2d:
    depthwise = old.groups > 1 and old.groups == old.in_channels == old.out_channels
    groups = w.shape[0] if depthwise else old.groups
    return nn.Conv2d(w.shape[1] * groups, w.shape[0], old.kernel_size, old.stride, old.padding, old.dilation,
                     groups, bias=old.bias is not None)


def _resized(name: str, old: nn.Module, state: Mapping[str, torch.Tensor]) -> nn.Module | None:
    w = state.get(f"{name}.weight")
    if w is None or (hasattr(old, "weight") and old.weight is not None and old.weight.shape == w.shape):
        return None
    if isinstance(old, nn.Conv2d):
        return _resized_conv(old, w)
    if isinstance(old, nn.Linear):
        return nn.Linear(w.shape[1], w.shape[0], bias=old.bias is not None)
    if isinstance(old, nn.BatchNorm2d):
        return nn.BatchNorm2d(w.shape[0], eps=old.eps, momentum=old.momentum)
    raise DataError(f"pruned weights resize layer {name!r} ({type(old).__name__}), which cannot be rebuilt")


def _bypass_missing_blocks_(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Replace (in place) each removable residual block of `model` none of whose weights `state` holds by its
    bypass: depth pruning removed that block."""
    for path in removable_blocks(model):
        if not any(k.startswith(path + ".") for k in state):
            bypass = _bypass(model.get_submodule(path))
            assert bypass is not None  # removable_blocks lists only blocks that have one
            model.set_submodule(path, bypass)


def load_pruned_state_(model: nn.Module, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """Resize every Conv2d/Linear/BatchNorm2d of `model` (in place) to the shapes in `state`, load `state`
    strictly and return `model`. Depthwise convs stay depthwise; a removable residual block with no weights in
    `state` (depth pruning removed it) is replaced by its bypass. A mismatch → DataError naming the layer."""
    _bypass_missing_blocks_(model, state)
    for name, module in list(model.named_modules()):
        new = _resized(name, module, state) if name else None
        if new is not None:
            model.set_submodule(name, new)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise DataError(f"pruned weights do not fit {type(model).__name__}: {' '.join(str(e).split())[:400]}") from e
    return model
