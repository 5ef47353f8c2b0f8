"""Conv + residual add fusion on the int8 IR: a conv (or depthwise conv) whose output only feeds the next op,
an add whose other operand dies there, becomes one `conv2d_add` / `depthwise_conv2d_add` op. Its output
may be written in place into that other operand (the skip), so the conv output is never materialised.

A fused op keeps both source ops recoverable (`split_conv_add`): inputs are (conv input, skip), `attrs` are
the conv's plus `conv_name`, `conv_output` (the unmaterialised conv output tensor, still in the graph's
tensors for its quantization), `add_name`, `skip_first` (the skip was the add's first operand) and `add`
(the add's attrs); `consts` are the conv's.
"""

from __future__ import annotations

from typing import Any

from ._ir import QGraph, QOp

__all__ = ["CONV_ADD_KINDS", "fuse_conv_add", "split_conv_add", "unfuse_conv_add"]

CONV_ADD_KINDS = {"conv2d": "conv2d_add", "depthwise_conv2d": "depthwise_conv2d_add"}  # conv kind → fused kind
_FUSED_KEYS = ("conv_name", "conv_output", "add_name", "skip_first", "add")


def _skip_operand(graph: QGraph, i: int) -> str | None:
    """The add operand to fuse with conv op `i`, or None when op i and op i + 1 do not form a fusable pair:
    op i is a conv whose output only op i + 1 reads, op i + 1 an add of it and another tensor of the same
    shape that no later op reads and that is not the graph output."""
    conv, add = graph.ops[i], graph.ops[i + 1]
    if conv.kind not in CONV_ADD_KINDS or add.kind != "add" or conv.output == graph.output:
        return None
    if add.inputs.count(conv.output) != 1 or graph.consumers(conv.output) != [i + 1]:
        return None
    (skip,) = (t for t in add.inputs if t != conv.output)
    if skip == graph.output or max(graph.consumers(skip)) != i + 1:
        return None
    return skip if graph.tensors[skip].shape == graph.tensors[conv.output].shape else None


def _fused(conv: QOp, add: QOp, skip: str) -> QOp:
    attrs: dict[str, Any] = {**conv.attrs, "conv_name": conv.name, "conv_output": conv.output,
                             "add_name": add.name, "skip_first": add.inputs[0] == skip, "add": dict(add.attrs)}
    return QOp(CONV_ADD_KINDS[conv.kind], f"{conv.name}+{add.name}", (conv.inputs[0], skip), add.output, attrs,
               dict(conv.consts))


def fuse_conv_add(graph: QGraph) -> QGraph:
    """`graph` with every fusable conv → add pair (see `_skip_operand`) replaced by one fused op; the result
    computes the same int8 outputs bit for bit. Returns `graph` itself when nothing fuses."""
    ops: list[QOp] = []
    i = 0
    while i < len(graph.ops):
        skip = _skip_operand(graph, i) if i + 1 < len(graph.ops) else None
        if skip is None:
            ops.append(graph.ops[i])
            i += 1
        else:
            ops.append(_fused(graph.ops[i], graph.ops[i + 1], skip))
            i += 2
    if len(ops) == len(graph.ops):
        return graph
    return QGraph(dict(graph.tensors), tuple(ops), graph.input, graph.output)


def split_conv_add(op: QOp) -> tuple[QOp, QOp]:
    """The (conv, add) pair a fused op was made of, exactly as they were in the unfused graph."""
    conv_kind = next(k for k, v in CONV_ADD_KINDS.items() if v == op.kind)
    a = op.attrs
    x, skip = op.inputs
    conv = QOp(conv_kind, a["conv_name"], (x,), a["conv_output"],
               {k: v for k, v in a.items() if k not in _FUSED_KEYS}, dict(op.consts))
    pair = (skip, a["conv_output"]) if a["skip_first"] else (a["conv_output"], skip)
    return conv, QOp("add", a["add_name"], pair, op.output, dict(a["add"]))


def unfuse_conv_add(graph: QGraph) -> QGraph:
    """`graph` with every fused conv + add op split back into its two ops (the inverse of `fuse_conv_add`)."""
    ops: list[QOp] = []
    for op in graph.ops:
        ops.extend(split_conv_add(op) if op.kind in CONV_ADD_KINDS.values() else (op,))
    return QGraph(dict(graph.tensors), tuple(ops), graph.input, graph.output)
