"""Conv + residual add fusion: which pairs fuse, bit-exactness of the fused graph with the unfused integer
reference (ResNet-8 and a toy net), in-place output into the skip operand (and never into the conv's own
input), the generated C under ASan/UBSan and on a Cortex-M4 under QEMU, the unchanged .tflite, and the
ResNet-8 arena falling below the unfused graph's lower bound."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from devicefit import models as M
from devicefit.core import ArchSpec
from devicefit.export import (
    CONV_ADD_KINDS,
    QGraph,
    build_host,
    convert_to_int8,
    fuse_conv_add,
    generate_c,
    plan_for_c,
    quantize_input,
    run_host,
    run_on_core,
    run_reference,
    split_conv_add,
    unfuse_conv_add,
)


class _Residuals(nn.Module):
    """Three conv → add pairs: 3×3 conv + skip (fuses, in place into the skip), skip + depthwise (fuses,
    skip first), 1×1 conv of z + z (fuses, but z is the conv's own input: no in-place), and a pair whose skip
    is read again later (does not fuse)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.c1 = nn.Sequential(nn.Conv2d(8, 8, 3, 1, 1), nn.ReLU())
        self.c2 = nn.Conv2d(8, 8, 3, 1, 1)
        self.expand = nn.Sequential(nn.Conv2d(8, 16, 1), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, 2, 1, groups=16), nn.ReLU6())
        self.project = nn.Conv2d(16, 8, 1)
        self.down = nn.Conv2d(8, 8, 1, 2)
        self.dw2 = nn.Conv2d(8, 8, 3, 1, 1, groups=8)
        self.pw = nn.Conv2d(8, 8, 1)
        self.pw2 = nn.Conv2d(8, 8, 1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        y = torch.relu(self.c2(self.c1(s)) + s)  # conv2d_add, skip second, fused ReLU
        d = self.down(y)
        z = d + self.dw2(self.project(self.dw(self.expand(y))))  # conv2d (project) → dw2 + skip first
        u = self.pw(z) + z  # fuses; the skip is the conv's input
        t = self.pw2(u) + u  # u is read again below: not fused
        return self.head(t + u)


@pytest.fixture(scope="module")
def toy() -> QGraph:
    torch.manual_seed(0)
    model = _Residuals().eval()
    model.stem[1].running_mean.uniform_(-0.5, 0.5)
    model.stem[1].running_var.uniform_(0.5, 2.0)
    return convert_to_int8(model, torch.randn(32, 3, 10, 10))


@pytest.fixture(scope="module")
def resnet8() -> QGraph:
    torch.manual_seed(0)
    model = M.build(ArchSpec("resnet8", {"input_shape": (3, 32, 32)})).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
    return convert_to_int8(model, torch.randn(8, 3, 32, 32))


def test_fusable_pairs_fuse_and_split_back_exactly(toy: QGraph) -> None:
    fused = fuse_conv_add(toy)
    kinds = [op.kind for op in fused.ops]
    assert kinds.count("conv2d_add") == 2 and kinds.count("depthwise_conv2d_add") == 1
    assert kinds.count("add") == 2  # pw2(u) + u (u read later) and t + u (no conv)
    (kept,) = [i for i, op in enumerate(fused.ops) if op.kind == "add" and fused.ops[i - 1].kind == "conv2d"]
    (skip,) = [t for t in fused.ops[kept].inputs if t != fused.ops[kept - 1].output]
    assert max(fused.consumers(skip)) > kept  # its skip is read again later
    dw_add = next(op for op in fused.ops if op.kind == "depthwise_conv2d_add")
    assert dw_add.attrs["skip_first"] and dw_add.attrs["add"]["act_min"] == -128
    conv, add = split_conv_add(dw_add)
    assert (conv.kind, add.kind, add.inputs) == ("depthwise_conv2d", "add", (dw_add.inputs[1], conv.output))
    back = unfuse_conv_add(fused)
    assert [(op.kind, op.name, op.inputs, op.output, op.attrs) for op in back.ops] == \
        [(op.kind, op.name, op.inputs, op.output, op.attrs) for op in toy.ops]
    assert fused.macs == toy.macs and fused.const_bytes == toy.const_bytes
    assert fuse_conv_add(fused) is fused  # nothing left to fuse


@pytest.mark.parametrize("which", ["toy", "resnet8"])
def test_fused_graph_is_bit_exact_with_the_unfused_reference(which: str, request: pytest.FixtureRequest) -> None:
    g: QGraph = request.getfixturevalue(which)
    fused = fuse_conv_add(g)
    assert len(fused.ops) < len(g.ops)
    shape = (3, *g.tensors[g.input].shape[1:3])
    xq = quantize_input(g, np.random.default_rng(5).normal(size=(6, *shape)) * 1.5)  # saturating inputs too
    np.testing.assert_array_equal(run_reference(fused, xq), run_reference(g, xq))


def test_output_is_planned_in_the_skip_buffer_but_never_in_the_conv_input(toy: QGraph) -> None:
    plan, fused = plan_for_c(toy), fuse_conv_add(toy)
    off = plan.tensor_offsets
    checked = 0
    for op in fused.ops:
        if op.kind in CONV_ADD_KINDS.values():
            x, skip = op.inputs
            assert off[op.output] != off[x]
            assert (off[op.output] == off[skip]) == (skip != x)
            checked += 1
    assert checked == 3
    assert plan.lower_bound_bytes <= plan.arena_bytes
    assert plan.unfused_lower_bound_bytes == plan_for_c(toy, fuse_add=False).lower_bound_bytes
    assert plan.to_dict()["unfused_lower_bound_bytes"] == plan.unfused_lower_bound_bytes


def test_resnet8_arena_drops_below_the_unfused_lower_bound(resnet8: QGraph) -> None:
    plan, unfused = plan_for_c(resnet8), plan_for_c(resnet8, fuse_add=False)
    assert unfused.arena_bytes == unfused.lower_bound_bytes > 48 * 1024  # three 16 KiB maps live at once
    assert plan.unfused_lower_bound_bytes == unfused.lower_bound_bytes
    assert plan.lower_bound_bytes <= plan.arena_bytes < 48 * 1024
    assert plan.arena_bytes < 0.7 * unfused.arena_bytes  # two 16 KiB maps + im2col scratch: ≈ 32 KiB


def test_fused_c_is_bit_exact_with_the_unfused_reference_under_sanitizers(toy: QGraph, tmp_path: Path) -> None:
    project = generate_c(toy)
    project.write(tmp_path / "c")
    source = (tmp_path / "c" / "model.c").read_text()
    assert "df_conv2d_add(" in source and "df_conv1x1_add(" in source and "df_depthwise_conv2d_add(" in source
    assert project.plan.arena_bytes == plan_for_c(toy).arena_bytes
    xq = quantize_input(toy, np.random.default_rng(6).normal(size=(10, 3, 10, 10)) * 1.5)
    got = run_host(build_host(tmp_path / "c", tmp_path / "build"), xq, project.output_bytes)
    np.testing.assert_array_equal(got, run_reference(toy, xq))


@pytest.mark.slow
def test_fused_resnet8_c_is_bit_exact_under_sanitizers(resnet8: QGraph, tmp_path: Path) -> None:
    project = generate_c(resnet8)
    assert project.plan.arena_bytes < 48 * 1024
    project.write(tmp_path / "c")
    xq = quantize_input(resnet8, np.random.default_rng(7).normal(size=(2, 3, 32, 32)))
    got = run_host(build_host(tmp_path / "c", tmp_path / "build"), xq, project.output_bytes)
    np.testing.assert_array_equal(got, run_reference(resnet8, xq))


@pytest.mark.toolchain
@pytest.mark.skipif(not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
                    reason="needs gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm")
def test_fused_c_is_bit_exact_on_cortex_m4(toy: QGraph, tmp_path: Path) -> None:
    generate_c(toy).write(tmp_path / "c")
    xq = quantize_input(toy, np.random.default_rng(8).normal(size=(3, 3, 10, 10)) * 1.5)
    want = run_reference(toy, xq)
    run = run_on_core(tmp_path / "c", "cortex-m4", xq, want)
    assert run.bit_exact
    np.testing.assert_array_equal(run.outputs, want)


def test_tflite_of_the_fused_graph_is_the_plain_conv_and_add_model(toy: QGraph) -> None:
    pytest.importorskip("tflite")
    from devicefit.export import tflite_bytes

    assert tflite_bytes(fuse_conv_add(toy)) == tflite_bytes(toy)
