"""The int8 IR: quantized tensors (TFLite int8 spec), integer ops with their constants, and the graph.

Feature maps are NHWC with batch 1 in the shape, (1, H, W, C); a flattened vector is (1, C). An op's
constants are numpy arrays (int8 weights, int32 bias, per-channel int32 multiplier and shift).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from devicefit.core import ConfigError

__all__ = ["OP_KINDS", "QGraph", "QOp", "QTensor"]

OP_KINDS = ("conv2d", "depthwise_conv2d", "fully_connected", "add", "avg_pool2d", "max_pool2d", "reshape",
            "conv2d_add", "depthwise_conv2d_add")  # the last two: a conv fused with a residual add (_fuse_add)


@dataclass(frozen=True)
class QTensor:
    """An int8 tensor: real value = scale · (q − zero_point)."""

    name: str
    shape: tuple[int, ...]
    scale: float
    zero_point: int
    dtype: str = "int8"

    def __post_init__(self) -> None:
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise ConfigError(f"tensor {self.name!r}: scale must be a finite number > 0, got {self.scale!r}")
        if not -128 <= self.zero_point <= 127:
            raise ConfigError(f"tensor {self.name!r}: zero_point must be in [-128, 127], got {self.zero_point}")
        if self.dtype != "int8":
            raise ConfigError(f"tensor {self.name!r}: dtype must be 'int8', got {self.dtype!r}")

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel  # one byte per int8 element


@dataclass(frozen=True, eq=False)
class QOp:
    """One integer op. `name` is the source node (for messages); `attrs` hold ints and tuples
    (stride, padding (top, left, bottom, right), act_min/act_max, ...; a fused conv + add also names and
    its add's attrs, see `_fuse_add`); `consts` hold the arrays."""

    kind: str
    name: str
    inputs: tuple[str, ...]
    output: str
    attrs: dict[str, Any] = field(default_factory=dict)
    consts: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in OP_KINDS:
            raise ConfigError(f"op {self.name!r}: kind must be one of {', '.join(OP_KINDS)}, got {self.kind!r}")

    @property
    def const_bytes(self) -> int:
        return sum(int(a.nbytes) for a in self.consts.values())


@dataclass(frozen=True, eq=False)
class QGraph:
    """Ops in execution order; `input`/`output` name the graph's int8 input and output tensors."""

    tensors: dict[str, QTensor]
    ops: tuple[QOp, ...]
    input: str
    output: str

    def __post_init__(self) -> None:
        known = {self.input}
        for op in self.ops:
            missing = [t for t in op.inputs if t not in known]
            if missing or op.output not in self.tensors:
                raise ConfigError(f"op {op.name!r}: inputs {missing} are not produced before it, or output "
                                  f"{op.output!r} has no tensor entry")
            known.add(op.output)
        if self.output not in known:
            raise ConfigError(f"graph output {self.output!r} is produced by no op")

    @property
    def const_bytes(self) -> int:
        """Bytes of all constants (weights, bias, multipliers, shifts): what goes to flash besides code."""
        return sum(op.const_bytes for op in self.ops)

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the conv, depthwise and fully connected ops."""
        total = 0
        for op in self.ops:
            if "weights" in op.consts:
                out = self.tensors[op.output]
                per_out = op.consts["weights"][0].size if not op.kind.startswith("depthwise") else \
                    op.consts["weights"].shape[0] * op.consts["weights"].shape[1]
                total += out.numel * per_out
        return total

    def consumers(self, tensor: str) -> list[int]:
        """Indices of the ops that read `tensor`."""
        return [i for i, op in enumerate(self.ops) if tensor in op.inputs]
