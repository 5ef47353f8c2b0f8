"""C emitters of the fused conv + residual add ops (`_fuse_add`): the conv kernels with their output store
replaced by the int8 ADD of the conv's int8 result and the skip element of the same index. Each skip element
is read once, just before its own slot is written, so the output may be the skip operand's buffer."""

from __future__ import annotations

from typing import Any

from ._emitters import EMITTERS, AddEmitter, Conv2dEmitter, DepthwiseConv2dEmitter, OpEmitter
from ._fuse_add import split_conv_add
from ._ir import QGraph, QOp

__all__ = ["fused_kernel"]

_STORES = {  # conv kernel → (left side of its one output store, the skip element of the same index)
    "df_conv2d": ("out[q * oc + c]", "skip[q * oc + c]"),
    "df_conv1x1": ("out[q * oc + c]", "skip[q * oc + c]"),
    "df_depthwise_conv2d": ("po[c]", "skip[(y * p->ow + x) * nc + c]"),
}


def fused_kernel(name: str, source: str) -> str:
    """Conv kernel `name`'s source turned into `<name>_add(p, pa, in, skip, out, ...)`: every output value
    v becomes df_add_one(pa, v, skip[same index]) (the add's operand parameters ordered conv result first)."""
    lhs, skip = _STORES[name]
    head = f"static void {name}(const df_window *p, const int8_t *in, int8_t *out"
    store = f"{lhs} = df_clamp("
    if source.count(head) != 1 or source.count(store) != 1:
        raise ValueError(f"kernel {name}: expected one signature {head!r} and one store {store!r} to fuse")
    source = source.replace(head, f"static void {name}_add(const df_window *p, const df_add_params *pa, "
                                  "const int8_t *in, const int8_t *skip, int8_t *out")
    start = source.index(store) + len(lhs) + 3
    end = source.index(";\n", start)
    return source[:start] + f"df_add_one(pa, {source[start:end]}, {skip})" + source[end:]


def _add_fields(add: QOp, graph: QGraph, skip_first: bool) -> list[int]:
    """df_add_params of the add with the conv result as operand 1 (operands swapped when the skip was the
    add's first: the int32 sum of the two rescaled operands commutes, so the result is bit-identical)."""
    f = AddEmitter().resolve(add, graph, 0)["fields"]
    return [f[0], f[2], f[1], f[3], f[4], *f[7:9], *f[5:7], *f[9:]] if skip_first else f


class _ConvAddEmitter(OpEmitter):
    """A conv emitter's kernel, parameters and scratch, plus the add's parameters and the skip pointer."""

    conv: type[OpEmitter] = Conv2dEmitter
    in_place = "reuse_other"
    needs_window_struct = True
    needs_add_struct = True

    def check(self, op: QOp, graph: QGraph) -> None:
        conv, add = split_conv_add(op)
        self.conv().check(conv, graph)
        AddEmitter().check(add, graph)

    def scratch_bytes(self, op: QOp, graph: QGraph) -> int:
        return self.conv().scratch_bytes(split_conv_add(op)[0], graph)

    def resolve(self, op: QOp, graph: QGraph, index: int) -> dict[str, Any]:
        conv, add = split_conv_add(op)
        return {**self.conv().resolve(conv, graph, index), "pa": f"pa{index}",
                "add_fields": _add_fields(add, graph, op.attrs["skip_first"])}

    def kernel_for(self, r: dict[str, Any]) -> tuple[str, str]:
        name, source = self.conv().kernel_for(r)
        return f"{name}_add", fused_kernel(name, source)

    def emit_consts(self, op: QOp, r: dict[str, Any]) -> str:
        return (self.conv().emit_consts(split_conv_add(op)[0], r)
                + f"static const df_add_params {r['pa']} = {{{', '.join(map(str, r['add_fields']))}}};\n")

    def emit_call(self, op: QOp, r: dict[str, Any], inputs: list[str], output: str) -> str:
        name = self.conv().kernel_for(r)[0]
        call = self.conv().emit_call(split_conv_add(op)[0], r, inputs[:1], output)
        head = f"{name}(&{r['p']}, {inputs[0]}, "
        if not call.startswith(head):
            raise ValueError(f"op {op.name!r}: conv call {call!r} does not start with {head!r}")
        return f"{name}_add(&{r['p']}, &{r['pa']}, {inputs[0]}, {inputs[1]}, " + call[len(head):]


@EMITTERS.register("conv2d_add")
class Conv2dAddEmitter(_ConvAddEmitter):
    kind = "conv2d_add"
    conv = Conv2dEmitter
    kernel = fused_kernel("df_conv2d", Conv2dEmitter.kernel)


@EMITTERS.register("depthwise_conv2d_add")
class DepthwiseConv2dAddEmitter(_ConvAddEmitter):
    kind = "depthwise_conv2d_add"
    conv = DepthwiseConv2dEmitter
    kernel = fused_kernel("df_depthwise_conv2d", DepthwiseConv2dEmitter.kernel)
