"""C emitters, one registered per int8 op kind, each with the lifecycle `check → resolve → emit`.

`check(op, graph)` raises `UnsupportedOpError` for what the kernel cannot do; `resolve(op, graph, index)`
returns the op's C parameter record (plain ints and constant array names); `emit_consts` writes its
`const` arrays (flash) and parameter struct, `emit_call` one call line. `kernel` is the C function shared
by all ops of the kind (written once per program); `in_place` tells the memory planner what aliasing
the kernel allows; `scratch_bytes` its scratch need, whose arena pointer the generator puts in the resolved
record as `r["scratch"]` before `emit_call`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from devicefit.core import Registry, UnsupportedOpError

from ._ir import QGraph, QOp

__all__ = ["ADD_STRUCT", "EMITTERS", "RUNTIME_C", "OpEmitter", "c_array"]

RUNTIME_C = r"""
static int32_t df_srdhm(int32_t a, int32_t b)
{ /* gemmlowp SaturatingRoundingDoublingHighMul */
    if (a == b && a == INT32_MIN) return INT32_MAX;
    int64_t ab = (int64_t)a * (int64_t)b;
    int64_t nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

static int32_t df_rdbpot(int32_t x, int e)
{ /* gemmlowp RoundingDivideByPOT: round half away from zero */
    int32_t mask = (int32_t)(((int64_t)1 << e) - 1);
    int32_t rem = x & mask;
    int32_t thr = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> e) + (rem > thr ? 1 : 0);
}

static int32_t df_requant(int32_t x, int32_t mult, int32_t shift)
{ /* TFLite MultiplyByQuantizedMultiplier; a left shift saturates to int32 instead of overflowing */
    int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
    int64_t xs = (int64_t)x * ((int64_t)1 << left);
    if (xs > INT32_MAX) xs = INT32_MAX;
    if (xs < INT32_MIN) xs = INT32_MIN;
    return df_rdbpot(df_srdhm((int32_t)xs, mult), right);
}

static int8_t df_clamp(int32_t v, int32_t lo, int32_t hi)
{
    return (int8_t)(v < lo ? lo : (v > hi ? hi : v));
}

static void df_copy(int8_t *dst, const int8_t *src, int32_t n)
{
    int32_t i;
    if (dst == src) return;
    for (i = 0; i < n; ++i) dst[i] = src[i];
}
"""

WINDOW_STRUCT = """
typedef struct { /* a windowed op over NHWC maps: sizes, stride, top/left padding, quantization */
    int32_t ih, iw, ic, oh, ow, oc, kh, kw, sh, sw, pt, pl;
    int32_t in_zp, out_zp, act_min, act_max;
    const int8_t *w; const int32_t *bias, *mult, *shift;
} df_window;
"""

ADD_STRUCT = """
typedef struct {
    int32_t n, zp1, zp2, out_zp, left_shift, m1, s1, m2, s2, mo, so, act_min, act_max;
} df_add_params;

static int8_t df_add_one(const df_add_params *p, int32_t a, int32_t b)
{ /* TFLite int8 ADD of one element pair: both rescaled to a common 2^-left_shift grid, summed, requantized */
    const int32_t x = df_requant((a - p->zp1) * (1 << p->left_shift), p->m1, p->s1);
    const int32_t y = df_requant((b - p->zp2) * (1 << p->left_shift), p->m2, p->s2);
    return df_clamp(df_requant(x + y, p->mo, p->so) + p->out_zp, p->act_min, p->act_max);
}
"""


def c_array(ctype: str, name: str, values: np.ndarray, per_line: int = 24) -> str:
    """`static const <ctype> <name>[n] = {...};` with `per_line` values a line."""
    flat = [str(int(v)) for v in np.asarray(values).reshape(-1)]
    lines = [", ".join(flat[i:i + per_line]) for i in range(0, len(flat), per_line)]
    body = ",\n    ".join(lines)
    return f"static const {ctype} {name}[{len(flat)}] = {{\n    {body}\n}};\n"


class OpEmitter:
    """Base emitter; subclasses set `kind`, `kernel`, `in_place` and implement the lifecycle.
    Emitters are stateless; `EMITTERS` holds their classes."""

    kind = ""
    kernel = ""
    in_place = "none"  # "none", "alias" (output = input bytes), "reuse" (elementwise overwrite) or
    # "reuse_other" (overwrite an input after the first; see _memory)
    needs_window_struct = False
    needs_add_struct = False  # the kernel uses df_add_params / df_add_one (ADD_STRUCT)

    def check(self, op: QOp, graph: QGraph) -> None:
        """Raise `UnsupportedOpError` naming the op when this kernel cannot run it."""

    def resolve(self, op: QOp, graph: QGraph, index: int) -> dict[str, Any]:
        raise NotImplementedError

    def kernel_for(self, r: dict[str, Any]) -> tuple[str, str]:
        """(C function name, its source) that the call of resolved record `r` needs."""
        return f"df_{self.kind}", self.kernel

    def emit_consts(self, op: QOp, r: dict[str, Any]) -> str:
        return ""

    def emit_call(self, op: QOp, r: dict[str, Any], inputs: list[str], output: str) -> str:
        raise NotImplementedError

    def scratch_bytes(self, op: QOp, graph: QGraph) -> int:
        return 0


EMITTERS: Registry[type[OpEmitter]] = Registry("C op emitter")


def _window(op: QOp, graph: QGraph, index: int, kernel_hw: tuple[int, int]) -> dict[str, Any]:
    src, dst = graph.tensors[op.inputs[0]], graph.tensors[op.output]
    _, ih, iw, ic = src.shape
    _, oh, ow, oc = dst.shape
    pt, pl = op.attrs["padding"][:2]
    return {"p": f"p{index}", "w": f"w{index}", "b": f"b{index}", "m": f"m{index}", "s": f"s{index}",
            "fields": [ih, iw, ic, oh, ow, oc, *kernel_hw, *op.attrs["stride"], pt, pl, src.zero_point,
                       dst.zero_point, op.attrs["act_min"], op.attrs["act_max"]]}


def _emit_window(op: QOp, r: dict[str, Any], *, with_consts: bool) -> str:
    ints = ", ".join(map(str, r["fields"]))
    if not with_consts:
        return f"static const df_window {r['p']} = {{{ints}, 0, 0, 0, 0}};\n"
    c = op.consts
    return (c_array("int8_t", r["w"], c["weights"]) + c_array("int32_t", r["b"], c["bias"], 8)
            + c_array("int32_t", r["m"], c["multiplier"], 8) + c_array("int32_t", r["s"], c["shift"], 16)
            + f"static const df_window {r['p']} = {{{ints}, {r['w']}, {r['b']}, {r['m']}, {r['s']}}};\n")


def _check_window(op: QOp, graph: QGraph) -> None:
    kh, kw = op.attrs.get("kernel", (1, 1))
    if len(graph.tensors[op.inputs[0]].shape) != 4 or len(graph.tensors[op.output].shape) != 4:
        raise UnsupportedOpError(f"op {op.name!r} ({op.kind}): needs 4-D NHWC input and output")
    if kh < 1 or kw < 1:
        raise UnsupportedOpError(f"op {op.name!r} ({op.kind}): kernel must be >= 1, got {(kh, kw)}")


class _WindowEmitter(OpEmitter):
    needs_window_struct = True
    with_consts = True

    def check(self, op: QOp, graph: QGraph) -> None:
        _check_window(op, graph)

    def resolve(self, op: QOp, graph: QGraph, index: int) -> dict[str, Any]:
        w = op.consts.get("weights")
        hw = op.attrs["kernel"] if w is None else (w.shape[1:3] if op.kind == "conv2d" else w.shape[:2])
        return _window(op, graph, index, tuple(int(v) for v in hw))

    def emit_consts(self, op: QOp, r: dict[str, Any]) -> str:
        return _emit_window(op, r, with_consts=self.with_consts)

    def emit_call(self, op: QOp, r: dict[str, Any], inputs: list[str], output: str) -> str:
        return f"df_{self.kind}(&{r['p']}, {inputs[0]}, {output});"


@EMITTERS.register("conv2d")
class Conv2dEmitter(_WindowEmitter):
    """Convolution as im2col + int8 dot products (the CMSIS-NN scheme). The bias is folded with the input
    zero point, bias - in_zp * sum(w), an exact integer identity: padded taps are filled with in_zp, so they
    add in_zp * w, which the folded bias cancels. 1x1 / stride 1 / unpadded convs skip im2col."""

    kind = "conv2d"
    DOT = """            for (i = 0; i + 4 <= k; i += 4)
                acc += x[i] * w[i] + x[i + 1] * w[i + 1] + x[i + 2] * w[i + 2] + x[i + 3] * w[i + 3];
            for (; i < k; ++i) acc += x[i] * w[i];
            out[q * oc + c] = df_clamp(df_requant(acc, p->mult[c], p->shift[c]) + p->out_zp, p->act_min, p->act_max);
"""
    kernel = r"""
static void df_conv2d(const df_window *p, const int8_t *in, int8_t *out, int8_t *col)
{ /* in (ih, iw, ic), w (oc, kh, kw, ic), out (oh, ow, oc); col: kh * kw * ic bytes of scratch */
    const int32_t k = p->kh * p->kw * p->ic, oc = p->oc, ic = p->ic;
    int32_t y, xo, c, ky, kx, i;
    for (y = 0; y < p->oh; ++y) for (xo = 0; xo < p->ow; ++xo) {
        const int32_t y0 = y * p->sh - p->pt, x0 = xo * p->sw - p->pl, q = y * p->ow + xo;
        const int8_t *x = col;
        int8_t *dst = col;
        for (ky = 0; ky < p->kh; ++ky) for (kx = 0; kx < p->kw; ++kx) {
            const int32_t iy = y0 + ky, ix = x0 + kx;
            if (iy < 0 || iy >= p->ih || ix < 0 || ix >= p->iw) {
                for (i = 0; i < ic; ++i) *dst++ = (int8_t)p->in_zp;
            } else {
                const int8_t *src = in + (iy * p->iw + ix) * ic;
                for (i = 0; i < ic; ++i) *dst++ = src[i];
            }
        }
        for (c = 0; c < oc; ++c) {
            const int8_t *w = p->w + c * k;
            int32_t acc = p->bias[c];
""" + DOT + """        }
    }
}
"""
    CONV1X1 = r"""
static void df_conv1x1(const df_window *p, const int8_t *in, int8_t *out)
{ /* 1x1, stride 1, no padding: one int8 dot product per pixel and output channel, straight from the input */
    const int32_t npix = p->oh * p->ow, k = p->ic, oc = p->oc;
    int32_t q, c, i;
    for (q = 0; q < npix; ++q) {
        const int8_t *x = in + q * k;
        for (c = 0; c < oc; ++c) {
            const int8_t *w = p->w + c * k;
            int32_t acc = p->bias[c];
""" + DOT + """        }
    }
}
"""

    @staticmethod
    def _pointwise(op: QOp) -> bool:
        w = op.consts["weights"]
        return w.shape[1:3] == (1, 1) and tuple(op.attrs["stride"]) == (1, 1) and not any(op.attrs["padding"])

    @staticmethod
    def _folded_bias(op: QOp, graph: QGraph) -> np.ndarray:
        w = op.consts["weights"].astype(np.int64)
        zp = graph.tensors[op.inputs[0]].zero_point
        return op.consts["bias"].astype(np.int64) - zp * w.reshape(len(w), -1).sum(axis=1)

    def check(self, op: QOp, graph: QGraph) -> None:
        super().check(op, graph)
        k = op.consts["weights"][0].size
        worst = np.abs(self._folded_bias(op, graph)).max() + 128 * 127 * k
        if worst >= 2**31:
            raise UnsupportedOpError(f"op {op.name!r} (conv2d): int32 accumulators could overflow (bias and "
                                     f"{k} taps reach {worst} >= 2^31)")

    def scratch_bytes(self, op: QOp, graph: QGraph) -> int:
        return 0 if self._pointwise(op) else int(op.consts["weights"][0].size)  # one im2col row

    def resolve(self, op: QOp, graph: QGraph, index: int) -> dict[str, Any]:
        return {**super().resolve(op, graph, index), "folded_bias": self._folded_bias(op, graph).astype(np.int32),
                "pointwise": self._pointwise(op)}

    def kernel_for(self, r: dict[str, Any]) -> tuple[str, str]:
        return ("df_conv1x1", self.CONV1X1) if r["pointwise"] else ("df_conv2d", self.kernel)

    def emit_consts(self, op: QOp, r: dict[str, Any]) -> str:
        return _emit_window(op, r, with_consts=True).replace(c_array("int32_t", r["b"], op.consts["bias"], 8),
                                                             c_array("int32_t", r["b"], r["folded_bias"], 8))

    def emit_call(self, op: QOp, r: dict[str, Any], inputs: list[str], output: str) -> str:
        if r["pointwise"]:
            return f"df_conv1x1(&{r['p']}, {inputs[0]}, {output});"
        return f"df_conv2d(&{r['p']}, {inputs[0]}, {output}, {r['scratch']});"


@EMITTERS.register("depthwise_conv2d")
class DepthwiseConv2dEmitter(_WindowEmitter):
    kind = "depthwise_conv2d"
    kernel = r"""
static void df_depthwise_conv2d(const df_window *p, const int8_t *in, int8_t *out, int32_t *acc)
{ /* in (ih, iw, c), w (kh, kw, c), out (oh, ow, c); depth multiplier 1. Per output pixel the int32
     accumulators of all channels live in scratch, so the channel loop is innermost (contiguous in NHWC). */
    const int32_t nc = p->oc, in_zp = p->in_zp;
    int32_t y, x, c, ky, kx;
    for (y = 0; y < p->oh; ++y) for (x = 0; x < p->ow; ++x) {
        const int32_t y0 = y * p->sh - p->pt, x0 = x * p->sw - p->pl;
        int8_t *po = out + (y * p->ow + x) * nc;
        for (c = 0; c < nc; ++c) acc[c] = p->bias[c];
        for (ky = 0; ky < p->kh; ++ky) {
            const int32_t iy = y0 + ky;
            if (iy < 0 || iy >= p->ih) continue;
            for (kx = 0; kx < p->kw; ++kx) {
                const int32_t ix = x0 + kx;
                const int8_t *px, *pw;
                if (ix < 0 || ix >= p->iw) continue;
                px = in + (iy * p->iw + ix) * nc;
                pw = p->w + (ky * p->kw + kx) * nc;
                for (c = 0; c < nc; ++c) acc[c] += ((int32_t)px[c] - in_zp) * (int32_t)pw[c];
            }
        }
        for (c = 0; c < nc; ++c)
            po[c] = df_clamp(df_requant(acc[c], p->mult[c], p->shift[c]) + p->out_zp, p->act_min, p->act_max);
    }
}
"""

    def check(self, op: QOp, graph: QGraph) -> None:
        super().check(op, graph)
        if graph.tensors[op.inputs[0]].shape[3] != graph.tensors[op.output].shape[3]:
            raise UnsupportedOpError(f"op {op.name!r} (depthwise_conv2d): only depth multiplier 1 is supported")

    def scratch_bytes(self, op: QOp, graph: QGraph) -> int:
        return 4 * graph.tensors[op.output].shape[3]  # one int32 accumulator per channel

    def emit_call(self, op: QOp, r: dict[str, Any], inputs: list[str], output: str) -> str:
        return f"df_depthwise_conv2d(&{r['p']}, {inputs[0]}, {output}, (int32_t *)(void *){r['scratch']});"


@EMITTERS.register("avg_pool2d")
class AvgPool2dEmitter(_WindowEmitter):
    kind = "avg_pool2d"
    with_consts = False
    kernel = r"""
static void df_avg_pool2d(const df_window *p, const int8_t *in, int8_t *out)
{ /* TFLite int8 average pool: mean of the valid taps, rounded half away from zero, same scale */
    int32_t y, x, c, ky, kx;
    for (y = 0; y < p->oh; ++y) for (x = 0; x < p->ow; ++x) {
        const int32_t y0 = y * p->sh - p->pt, x0 = x * p->sw - p->pl;
        for (c = 0; c < p->oc; ++c) {
            int32_t acc = 0, n = 0;
            for (ky = 0; ky < p->kh; ++ky) {
                const int32_t iy = y0 + ky;
                if (iy < 0 || iy >= p->ih) continue;
                for (kx = 0; kx < p->kw; ++kx) {
                    const int32_t ix = x0 + kx;
                    if (ix < 0 || ix >= p->iw) continue;
                    acc += in[(iy * p->iw + ix) * p->ic + c];
                    ++n;
                }
            }
            acc = acc > 0 ? (acc + n / 2) / n : (acc - n / 2) / n;
            out[(y * p->ow + x) * p->oc + c] = df_clamp(acc, p->act_min, p->act_max);
        }
    }
}
"""


@EMITTERS.register("max_pool2d")
class MaxPool2dEmitter(_WindowEmitter):
    kind = "max_pool2d"
    with_consts = False
    kernel = r"""
static void df_max_pool2d(const df_window *p, const int8_t *in, int8_t *out)
{ /* maximum over the valid taps */
    int32_t y, x, c, ky, kx;
    for (y = 0; y < p->oh; ++y) for (x = 0; x < p->ow; ++x) {
        const int32_t y0 = y * p->sh - p->pt, x0 = x * p->sw - p->pl;
        for (c = 0; c < p->oc; ++c) {
            int32_t m = -128;
            for (ky = 0; ky < p->kh; ++ky) {
                const int32_t iy = y0 + ky;
                if (iy < 0 || iy >= p->ih) continue;
                for (kx = 0; kx < p->kw; ++kx) {
                    const int32_t ix = x0 + kx;
                    int32_t v;
                    if (ix < 0 || ix >= p->iw) continue;
                    v = in[(iy * p->iw + ix) * p->ic + c];
                    if (v > m) m = v;
                }
            }
            out[(y * p->ow + x) * p->oc + c] = df_clamp(m, p->act_min, p->act_max);
        }
    }
}
"""


@EMITTERS.register("fully_connected")
class FullyConnectedEmitter(OpEmitter):
    kind = "fully_connected"
    kernel = r"""
typedef struct {
    int32_t n_in, n_out, in_zp, out_zp, act_min, act_max;
    const int8_t *w; const int32_t *bias, *mult, *shift;
} df_fc;

static void df_fully_connected(const df_fc *p, const int8_t *in, int8_t *out)
{ /* in (n_in), w (n_out, n_in), out (n_out) */
    int32_t o, i;
    for (o = 0; o < p->n_out; ++o) {
        const int8_t *w = p->w + o * p->n_in;
        int32_t acc = p->bias[o];
        for (i = 0; i < p->n_in; ++i) acc += ((int32_t)in[i] - p->in_zp) * (int32_t)w[i];
        out[o] = df_clamp(df_requant(acc, p->mult[o], p->shift[o]) + p->out_zp, p->act_min, p->act_max);
    }
}
"""

    def check(self, op: QOp, graph: QGraph) -> None:
        if len(graph.tensors[op.inputs[0]].shape) != 2:
            raise UnsupportedOpError(f"op {op.name!r} (fully_connected): needs a (1, C) input, got "
                                     f"{graph.tensors[op.inputs[0]].shape}")

    def resolve(self, op: QOp, graph: QGraph, index: int) -> dict[str, Any]:
        src, dst = graph.tensors[op.inputs[0]], graph.tensors[op.output]
        fields = [src.shape[1], dst.shape[1], src.zero_point, dst.zero_point, op.attrs["act_min"], op.attrs["act_max"]]
        return {"p": f"p{index}", "w": f"w{index}", "b": f"b{index}", "m": f"m{index}", "s": f"s{index}",
                "fields": fields}

    def emit_consts(self, op: QOp, r: dict[str, Any]) -> str:
        c, ints = op.consts, ", ".join(map(str, r["fields"]))
        return (c_array("int8_t", r["w"], c["weights"]) + c_array("int32_t", r["b"], c["bias"], 8)
                + c_array("int32_t", r["m"], c["multiplier"], 8) + c_array("int32_t", r["s"], c["shift"], 16)
                + f"static const df_fc {r['p']} = {{{ints}, {r['w']}, {r['b']}, {r['m']}, {r['s']}}};\n")

    def emit_call(self, op: QOp, r: dict[str, Any], inputs: list[str], output: str) -> str:
        return f"df_fully_connected(&{r['p']}, {inputs[0]}, {output});"


@EMITTERS.register("add")
class AddEmitter(OpEmitter):
    kind = "add"
    in_place = "reuse"
    needs_add_struct = True
    kernel = r"""
static void df_add(const df_add_params *p, const int8_t *a, const int8_t *b, int8_t *out)
{ /* TFLite int8 ADD; elementwise, so `out` may be `a` or `b` */
    int32_t i;
    for (i = 0; i < p->n; ++i) out[i] = df_add_one(p, a[i], b[i]);
}
"""

    def check(self, op: QOp, graph: QGraph) -> None:
        shapes = {graph.tensors[t].shape for t in (*op.inputs, op.output)}
        if len(op.inputs) != 2 or len(shapes) != 1:
            raise UnsupportedOpError(f"op {op.name!r} (add): needs two inputs and an output of one shape, got {shapes}")

    def resolve(self, op: QOp, graph: QGraph, index: int) -> dict[str, Any]:
        a = op.attrs
        t1, t2, to = (graph.tensors[t] for t in (*op.inputs, op.output))
        fields = [to.numel, t1.zero_point, t2.zero_point, to.zero_point, a["left_shift"], a["in1_multiplier"],
                  a["in1_shift"], a["in2_multiplier"], a["in2_shift"], a["out_multiplier"], a["out_shift"],
                  a["act_min"], a["act_max"]]
        return {"p": f"p{index}", "fields": fields}

    def emit_consts(self, op: QOp, r: dict[str, Any]) -> str:
        return f"static const df_add_params {r['p']} = {{{', '.join(map(str, r['fields']))}}};\n"

    def emit_call(self, op: QOp, r: dict[str, Any], inputs: list[str], output: str) -> str:
        return f"df_add(&{r['p']}, {inputs[0]}, {inputs[1]}, {output});"


@EMITTERS.register("reshape")
class ReshapeEmitter(OpEmitter):
    kind = "reshape"
    in_place = "alias"

    def resolve(self, op: QOp, graph: QGraph, index: int) -> dict[str, Any]:
        return {"n": graph.tensors[op.output].numel}

    def emit_call(self, op: QOp, r: dict[str, Any], inputs: list[str], output: str) -> str:
        return f"df_copy({output}, {inputs[0]}, {r['n']}); /* no-op when planned in place */"
