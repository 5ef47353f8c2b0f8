"""Cortex-M: cross-compiled for every registered core, run under QEMU bit-exact with the reference;
flash/SRAM checked by the linker against a budget; a missing tool chain gives an actionable message."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from devicefit.export import (
    CORES,
    QGraph,
    ToolchainError,
    check_memory_fit,
    convert_to_int8,
    generate_c,
    quantize_input,
    require_tool,
    run_on_core,
    run_reference,
)

# the Makefile's `toolchain` target installs these; without them these tests skip, as it announces
NEEDS_TOOLCHAIN = pytest.mark.skipif(not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
                                     reason="needs gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, QGraph]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, 1, 1, groups=8),
                          nn.ReLU6(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    graph = convert_to_int8(model, torch.randn(16, 2, 12, 10))
    root = tmp_path_factory.mktemp("mcu") / "c"
    generate_c(graph).write(root)
    return root, graph


@pytest.mark.toolchain
@NEEDS_TOOLCHAIN
@pytest.mark.parametrize("core", CORES.names())
def test_bit_exact_on_every_core_under_qemu(project: tuple[Path, QGraph], core: str) -> None:
    root, graph = project
    xq = quantize_input(graph, np.random.default_rng(3).normal(size=(3, 2, 12, 10)))
    want = run_reference(graph, xq)
    run = run_on_core(root, core, xq, want)
    assert run.bit_exact and run.mismatches == 0
    np.testing.assert_array_equal(run.outputs, want)
    assert run.qemu_machine == CORES.get(core).qemu_machine
    # the model's code runs at least one instruction per MAC, and far fewer than the whole program
    assert graph.macs <= run.instructions_per_inference < run.instructions_total
    assert run.to_dict()["method"].startswith("QEMU TCG plugin")


@pytest.mark.toolchain
@NEEDS_TOOLCHAIN
def test_qemu_reports_mismatches_against_wrong_expectations(project: tuple[Path, QGraph]) -> None:
    root, graph = project
    xq = quantize_input(graph, np.random.default_rng(4).normal(size=(2, 2, 12, 10)))
    wrong = run_reference(graph, xq).copy()
    wrong[1, 2] = wrong[1, 2] ^ 1
    run = run_on_core(root, "cortex-m4", xq, wrong)
    assert not run.bit_exact and run.mismatches == 1


@pytest.mark.toolchain
@NEEDS_TOOLCHAIN
def test_memory_fit_reports_missing_bytes_instead_of_failing(project: tuple[Path, QGraph]) -> None:
    root, _ = project
    ok = check_memory_fit(root, "cortex-m4", 1 << 20, 256 << 10)
    assert ok.fits and ok.missing_flash_bytes == ok.missing_sram_bytes == 0
    assert ok.flash_bytes > 0 and ok.sram_bytes >= ok.stack_bytes
    tight = check_memory_fit(root, "cortex-m4", 1024, 4096)
    assert not tight.fits and "overflowed" in tight.linker_message
    assert (tight.flash_bytes, tight.sram_bytes) == (ok.flash_bytes, ok.sram_bytes)
    assert tight.missing_flash_bytes == ok.flash_bytes - 1024
    assert tight.missing_sram_bytes == ok.sram_bytes - 4096
    assert tight.to_dict()["fits"] is False


def test_missing_tool_names_the_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ToolchainError, match="apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi"):
        require_tool("arm-none-eabi-gcc")
    with pytest.raises(ToolchainError, match="apt-get install qemu-system-arm"):
        require_tool("qemu-system-arm")
