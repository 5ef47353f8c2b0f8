"""A runnable low-bit model: a `QuantizedLlama`'s matrices packed for PyTorch's CPU weight-only
kernels (4-bit `_weight_int4pack_mm_for_cpu`, 8-bit per-row `_weight_int8pack_mm`), so memory
and decode speed are those of the stored codes, not of dequantized float copies."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from devicefit.core import Registry

from ._grids import AbsMaxGrid, MinMaxGrid, SignedMaxGrid
from ._groupq import QuantizedMatrix
from ._model import Llama
from ._quant import QuantizedLlama

__all__ = ["KERNELS", "Int4PackedLinear", "Int8PackedLinear", "PackedLlama", "model_bytes", "pack_llama"]


def _h(x: torch.Tensor) -> torch.Tensor:
    return x.half().float()


class Int4PackedLinear(nn.Module):
    """y = x W^T with W = (code - 8) * scale + zero per group of `group_size` inputs, codes in
    torch's CPU int4 pack (two per byte), (scale, zero) float32 per (group, output)."""

    def __init__(self, qm: QuantizedMatrix) -> None:
        super().__init__()
        g = qm.grid.group_size
        self.group_size, self.out_features, self.in_features = g, *qm.codes.shape
        d = _h(qm.d)
        zero = _h(qm.m) + 8 * d if isinstance(qm.grid, MinMaxGrid) else torch.zeros_like(d)
        self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(qm.codes.int(), 1))
        self.register_buffer("scales_zeros", torch.stack([d, zero], -1).transpose(0, 1).contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x.reshape(-1, self.in_features).contiguous(), self.packed,
                                                       self.group_size, self.scales_zeros)
        return y.reshape(*x.shape[:-1], self.out_features)


class Int8PackedLinear(nn.Module):
    """y = x W^T with W = int8 code * scale per output row."""

    def __init__(self, qm: QuantizedMatrix) -> None:
        super().__init__()
        self.out_features, self.in_features = qm.codes.shape
        self.register_buffer("weight_int8", (qm.codes.int() - 128).to(torch.int8))
        self.register_buffer("scales", _h(qm.d[:, 0]).contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.aten._weight_int8pack_mm(x.reshape(-1, self.in_features).contiguous(), self.weight_int8,
                                               self.scales)
        return y.reshape(*x.shape[:-1], self.out_features)


@dataclass(frozen=True)
class Kernel:
    """`supports(qm)`: whether this kernel runs the matrix exactly as stored; `build(qm)`: the module."""

    supports: Callable[[QuantizedMatrix], bool]
    build: Callable[[QuantizedMatrix], nn.Module]


def _int4_ok(qm: QuantizedMatrix) -> bool:
    g, (n, k) = qm.grid.group_size, qm.codes.shape
    return (qm.grid.bits == 4 and isinstance(qm.grid, MinMaxGrid | SignedMaxGrid) and g in (32, 64, 128, 256)
            and k % g == 0 and n % 16 == 0 and len(qm.bounds) == k // g)


def _int8_ok(qm: QuantizedMatrix) -> bool:
    return qm.grid.bits == 8 and isinstance(qm.grid, AbsMaxGrid) and len(qm.bounds) == 1


KERNELS: Registry[Kernel] = Registry("weight-only CPU kernel")
KERNELS.add("int4pack", Kernel(_int4_ok, Int4PackedLinear))
KERNELS.add("int8pack", Kernel(_int8_ok, Int8PackedLinear))


@dataclass
class PackedLlama:
    """`model` runs with packed matrices; `kernels` maps each block matrix to its kernel name or
    `float` (no kernel fits: kept as the dequantized float32 Linear)."""

    model: Llama
    kernels: dict[str, str]


def pack_llama(q: QuantizedLlama) -> PackedLlama:
    """A copy of `q.model` whose quantized matrices are replaced by the first registered kernel
    that runs them exactly (same codes, scales and mins); `q` is not changed."""
    model = copy.deepcopy(q.model)
    kernels = {}
    for name, qm in q.matrices.items():
        kern = next((k for k in KERNELS.names() if qm is not None and KERNELS.get(k).supports(qm)), "float")
        kernels[name] = kern
        if kern != "float":
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent), leaf, KERNELS.get(kern).build(qm))
    return PackedLlama(model, kernels)


def model_bytes(model: nn.Module) -> int:
    """Bytes of the model's state (parameters and persistent buffers, e.g. packed codes) as held
    in memory, shared storage counted once; derived tables such as RoPE's are not counted."""
    seen, total = set(), 0
    for t in model.state_dict().values():
        key = t.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total
