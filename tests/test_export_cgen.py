"""C generator: golden files per registered emitter, and generated projects built with gcc -std=c99 -Wall
-Werror and AddressSanitizer/UBSan, bit-exact with the integer reference."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from devicefit.core import UnsupportedOpError
from devicefit.export import (
    CONV_ADD_KINDS,
    EMITTERS,
    QGraph,
    QOp,
    QTensor,
    build_host,
    convert_to_int8,
    emitter_for,
    fuse_conv_add,
    generate_c,
    quantize_input,
    run_host,
    run_reference,
)

GOLDEN = Path(__file__).parent / "golden" / "export"
UPDATE = os.environ.get("DEVICEFIT_UPDATE_GOLDEN") == "1"


def _golden_graph(kind: str) -> tuple[QGraph, QOp]:
    """A deterministic tiny op of `kind` with hand-set constants (no training, no randomness)."""
    t = {"x": QTensor("x", (1, 3, 3, 2), 0.05, -3), "y": QTensor("y", (1, 2, 2, 2), 0.1, 4),
         "v": QTensor("v", (1, 4), 0.05, -3), "f": QTensor("f", (1, 2), 0.2, 1),
         "z": QTensor("z", (1, 3, 3, 2), 0.07, 2)}
    win = {"stride": (2, 2), "padding": (1, 1, 0, 0), "act_min": -128, "act_max": 127}
    wc = {"bias": np.array([100, -7], np.int32), "multiplier": np.array([1 << 30, 1518500250], np.int32),
          "shift": np.array([-1, -3], np.int32)}
    ops = {
        "conv2d": QOp("conv2d", "conv", ("x",), "y", win, {**wc, "weights": np.arange(-8, 8).reshape(2, 2, 2, 2)
                                                            .astype(np.int8)}),
        "depthwise_conv2d": QOp("depthwise_conv2d", "dw", ("x",), "y", win,
                                {**wc, "weights": np.arange(-4, 4).reshape(2, 2, 2).astype(np.int8)}),
        "avg_pool2d": QOp("avg_pool2d", "ap", ("x",), "y", {**win, "kernel": (2, 2)}),
        "max_pool2d": QOp("max_pool2d", "mp", ("x",), "y", {**win, "kernel": (2, 2)}),
        "fully_connected": QOp("fully_connected", "fc", ("v",), "f", {"act_min": -128, "act_max": 127},
                               {**wc, "weights": np.array([[1, -2, 3, -4], [5, 6, -7, 8]], np.int8)}),
        "add": QOp("add", "add", ("x", "x"), "z", {"left_shift": 20, "in1_multiplier": 1 << 30, "in1_shift": 0,
                                                   "in2_multiplier": 1 << 30, "in2_shift": 0,
                                                   "out_multiplier": 1533916891, "out_shift": -19,
                                                   "act_min": 2, "act_max": 127}),
        "reshape": QOp("reshape", "flat", ("x",), "z"),
    }
    if kind in CONV_ADD_KINDS.values():  # pool x → s, conv x → y, add (s, y) → o: fused, skip first
        t |= {"s": QTensor("s", (1, 2, 2, 2), 0.08, -5), "o": QTensor("o", (1, 2, 2, 2), 0.12, 3)}
        pool = QOp("max_pool2d", "mp", ("x",), "s", {**win, "kernel": (2, 2)})
        res = QOp("add", "res", ("s", "y"), "o", {**ops["add"].attrs, "in1_multiplier": 1518500250,
                                                  "in1_shift": -1, "act_min": -128})
        g = fuse_conv_add(QGraph(t, (pool, ops[kind.removesuffix("_add")], res), "x", "o"))
        return g, g.ops[-1]
    op = ops[kind]
    src = op.inputs[0]
    return QGraph({k: v for k, v in t.items() if k in (src, op.output)}, (op,), src, op.output), op


@pytest.mark.parametrize("kind", EMITTERS.names())
def test_emitter_matches_its_golden_file(kind: str) -> None:
    graph, op = _golden_graph(kind)
    em = emitter_for(kind, op.name)
    em.check(op, graph)
    r = em.resolve(op, graph, 0)
    if em.scratch_bytes(op, graph):
        r["scratch"] = "(a + 64)"
    text = em.kernel.strip() + "\n\n" + em.emit_consts(op, r) + em.emit_call(op, r, ["(a + 0)", "(a + 0)"][
        :len(op.inputs)], "(a + 32)") + "\n"
    path = GOLDEN / f"{kind}.c"
    if UPDATE:
        path.write_text(text)
    assert path.exists(), f"no golden file for emitter {kind!r}; run with DEVICEFIT_UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text()


def test_every_golden_file_has_an_emitter() -> None:
    assert sorted(p.stem for p in GOLDEN.glob("*.c")) == EMITTERS.names()


def test_unknown_op_kind_is_unsupported() -> None:
    with pytest.raises(UnsupportedOpError, match=r"op 'n7'.*no C emitter for 'softmax'; supported: add, "):
        emitter_for("softmax", "n7")


class _AllOps(nn.Module):
    """Every supported op: strided/asymmetric conv, depthwise, max and average pools (padded), residual adds
    (fused into the preceding 1×1 conv or depthwise conv by default), ReLU, ReLU6, global pool, flatten, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, (3, 2), 2, (1, 0)), nn.BatchNorm2d(8), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1, groups=8), nn.BatchNorm2d(8), nn.ReLU())
        self.pw = nn.Conv2d(8, 8, 1)
        self.dw2 = nn.Conv2d(8, 8, 3, 1, 1, groups=8)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.avgpool = nn.AvgPool2d(2, 1, 1, count_include_pad=False)
        self.conv = nn.Conv2d(8, 12, 3, 1, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(self.dw(x) + self.pw(x))
        x = x + self.dw2(x)
        x = self.avgpool(self.maxpool(x))
        return self.fc(torch.flatten(self.pool(self.conv(x)), 1))


@pytest.fixture(scope="module")
def all_ops_graph() -> QGraph:
    torch.manual_seed(0)
    model = _AllOps().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial running statistics so folding matters
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return convert_to_int8(model, torch.randn(32, 3, 11, 9))


@pytest.mark.parametrize("planner,in_place,fuse_add", [("greedy", True, True), ("greedy", True, False),
                                                       ("naive", False, False)])
def test_generated_c_is_bit_exact_with_the_reference_under_sanitizers(all_ops_graph: QGraph, tmp_path: Path,
                                                                      planner: str, in_place: bool,
                                                                      fuse_add: bool) -> None:
    g = all_ops_graph
    assert {op.kind for op in g.ops} | {op.kind for op in fuse_conv_add(g).ops} == set(EMITTERS.names())
    project = generate_c(g, planner=planner, in_place=in_place, fuse_add=fuse_add)
    project.write(tmp_path / "c")
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["model.c", "model.h"]
    header = (tmp_path / "c" / "model.h").read_text()
    assert "int model_invoke(const int8_t *input, int8_t *output);" in header
    assert f"#define MODEL_ARENA_BYTES {project.plan.arena_bytes}" in header
    x = np.random.default_rng(1).normal(size=(12, 3, 11, 9)) * 1.5  # wider than calibration: saturation paths
    xq = quantize_input(g, x)
    want = run_reference(g, xq)
    got = run_host(build_host(tmp_path / "c", tmp_path / "build"), xq, project.output_bytes)
    np.testing.assert_array_equal(got, want)
    if in_place:
        assert project.plan.arena_bytes < project.plan.naive_bytes
    else:
        assert project.plan.arena_bytes == project.plan.naive_bytes
