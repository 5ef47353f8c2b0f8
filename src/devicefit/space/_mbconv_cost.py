"""Analytic per-layer cost tables of the MBConv spaces (parameters, MACs) at fixed stage widths: a network's
cost is `constant + Σ_layers table[layer, op]` exactly, because the first layer of each stage (which changes
shape) is never skipped; so the table is a differentiable cost model over one-hot op choices (LightNAS)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from devicefit.core import ArchSpec, check_choice

from ._mbconv import MBCONV_OPS, MBConvSpace, op_params

__all__ = ["COST_METRICS", "mbconv_cost", "mbconv_cost_table", "mbconv_peak_sram", "mbconv_peak_table"]

COST_METRICS = ("params", "macs")


def _conv(c_in: int, c_out: int, k: int, groups: int, hw_out: int) -> tuple[int, int]:
    """(params incl. BN weight and bias, MACs) of conv (no bias) → BN at `hw_out` output pixels."""
    return c_in // groups * c_out * k * k + 2 * c_out, c_in // groups * c_out * k * k * hw_out


def _block(c_in: int, c_out: int, k: int, e: int, hw_in: int, hw_out: int) -> tuple[int, int]:
    hidden = round(c_in * e)  # as InvertedResidual
    parts = (_conv(c_in, hidden, 1, 1, hw_in), _conv(hidden, hidden, k, hidden, hw_out),
             _conv(hidden, c_out, 1, 1, hw_out))
    return sum(p for p, _ in parts), sum(m for _, m in parts)


def mbconv_cost_table(space: MBConvSpace, widths: Sequence[float], *, metric: str = "params",
                      num_classes: int = 10, input_shape: Sequence[int] | None = None) -> tuple[float, np.ndarray]:
    """(constant, (n_layers, len(MBCONV_OPS)) table) of `metric` ("params" or "macs") for stage `widths`;
    `skip` entries are 0, and a skip in a first-of-stage layer is impossible (entry NaN)."""
    check_choice("metric", metric, COST_METRICS)
    pick = 0 if metric == "params" else 1
    c, h, w = tuple(input_shape or space.input_shape)
    probe = ArchSpec(space.name, {"ops": tuple("k3_e3" for _ in space.layer_stage()), "widths": tuple(widths)})
    chans = space.stage_channels(space.validate(probe))
    stem = _conv(c, space.stem_channels, 3, 1, h * w)
    table = np.zeros((space.n_layers, len(MBCONV_OPS)))
    c_in = space.stem_channels
    for i, (stage, first) in enumerate(space.layer_stage()):
        hw_in = h * w
        if first and space.stages[stage].stride == 2:
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        for j, op in enumerate(MBCONV_OPS):
            params = op_params(op)
            if params is None:
                table[i, j] = math.nan if first else 0.0
            else:
                table[i, j] = _block(c_in, chans[stage], params[0], params[1], hw_in, h * w)[pick]
        c_in = chans[stage]
    head = _conv(c_in, space.head_channels, 1, 1, h * w)
    fc = (space.head_channels * num_classes + num_classes, space.head_channels * num_classes)
    return float(stem[pick] + head[pick] + fc[pick]), table


def mbconv_cost(space: MBConvSpace, spec: ArchSpec, *, metric: str = "params", num_classes: int = 10,
                input_shape: Sequence[int] | None = None) -> float:
    """`metric` of the network of `spec` (equals counting the built `MBConvNet`)."""
    spec = space.validate(spec)
    const, table = mbconv_cost_table(space, spec["widths"], metric=metric, num_classes=num_classes,
                                     input_shape=input_shape)
    return const + float(sum(table[i, MBCONV_OPS.index(op)] for i, op in enumerate(spec["ops"])))


def mbconv_peak_table(space: MBConvSpace, widths: Sequence[float], *, num_classes: int = 10,
                      input_shape: Sequence[int] | None = None, act_bits: int = 8) -> tuple[float, np.ndarray]:
    """(floor, (n_layers, len(MBCONV_OPS)) table) of peak activation memory (bytes at `act_bits`, as
    `nn.analyze` counts live buffers) for stage `widths`: a network's peak is `max(floor, max_layers
    table[layer, op])` exactly. An entry is the most memory live while that layer's block runs (its input,
    kept for the residual, and its hidden tensors), which depends on the layer's op alone because every block's
    input and output shapes are fixed by the widths; the floor is the stem's and head's. `skip` entries are 0
    (the block is absent), NaN where impossible (first layer of a stage). Built from one `analyze` per op."""
    from devicefit.nn import analyze

    shape = tuple(input_shape or space.input_shape)
    firsts = [first for _, first in space.layer_stage()]
    table = np.zeros((space.n_layers, len(MBCONV_OPS)))
    floor = 0.0
    for j, op in enumerate(MBCONV_OPS):
        if op_params(op) is None:
            table[:, j] = [math.nan if first else 0.0 for first in firsts]
            continue
        spec = ArchSpec(space.name, {"ops": (op,) * space.n_layers, "widths": tuple(widths)})
        report = analyze(space.build(spec, num_classes=num_classes, input_shape=shape), shape, act_bits=act_bits)
        for layer in report.layers:  # MBConvNet.features: stem, one block per layer, head
            parts = layer.scope.split(".")
            k = int(parts[1]) if parts[0] == "features" and len(parts) > 1 else -1
            if 1 <= k <= space.n_layers:
                table[k - 1, j] = max(table[k - 1, j], layer.live_bytes)
            else:
                floor = max(floor, float(layer.live_bytes))
    return floor, table


def mbconv_peak_sram(space: MBConvSpace, spec: ArchSpec, *, num_classes: int = 10,
                     input_shape: Sequence[int] | None = None, act_bits: int = 8) -> float:
    """Peak activation bytes of `spec`'s network by `mbconv_peak_table` (equals `nn.analyze` of the built
    network)."""
    spec = space.validate(spec)
    floor, table = mbconv_peak_table(space, spec["widths"], num_classes=num_classes, input_shape=input_shape,
                                     act_bits=act_bits)
    return max(floor, *(float(table[i, MBCONV_OPS.index(op)]) for i, op in enumerate(spec["ops"])))
