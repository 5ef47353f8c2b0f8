"""Cortex-M verification: cross-compile a generated project, check flash/SRAM against a target's budget
with the linker, run it under QEMU with semihosting and count instructions with a TCG plugin."""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from devicefit.core import DataError, atomic_write_text

from ._toolchain import CORES, Core, ToolchainError, require_tool, run_tool, stage_project, support_file

__all__ = ["CoreRun", "MemoryFit", "check_memory_fit", "run_on_core"]

ARM_CFLAGS = ("-O2", "-g", "-std=gnu99", "-Wall", "-Wextra", "-ffunction-sections", "-fdata-sections",
              "-fno-tree-loop-distribute-patterns", "-nostdlib")
_OVERFLOW = re.compile(r"region `?(\w+)'? overflowed by (\d+) bytes")
STACK_BYTES = 8 << 10
DEPLOY_MAIN = """/* Smallest application around the model: one inference on static buffers (for sizing). */
#include <stdint.h>
#include "model.h"
static int8_t input[MODEL_INPUT_BYTES];
static int8_t output[MODEL_OUTPUT_BYTES];
int main(void) { return model_invoke(input, output); }
"""


@dataclass(frozen=True)
class MemoryFit:
    """Flash and SRAM of the linked image against a target's budget (bytes). `missing_*` are 0 when it fits.
    flash = .text (code + const weights) + .data image; sram = .data + .bss (arena, I/O buffers) + stack."""

    core: str
    flash_bytes: int
    sram_bytes: int
    flash_budget_bytes: int
    sram_budget_bytes: int
    stack_bytes: int
    missing_flash_bytes: int
    missing_sram_bytes: int
    linker_message: str = ""

    @property
    def fits(self) -> bool:
        return self.missing_flash_bytes == 0 and self.missing_sram_bytes == 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fits": self.fits}


@dataclass(frozen=True)
class CoreRun:
    """A QEMU run of the test harness: per-input outputs, mismatches vs the reference and the exact
    guest instruction count inside the model's code (an instruction count, not a time)."""

    core: str
    qemu_machine: str
    n_inputs: int
    mismatches: int
    bit_exact: bool
    instructions_per_inference: float
    instructions_total: int
    outputs: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "outputs"}
        d["method"] = "QEMU TCG plugin, exact guest instruction count inside model code, mean over inputs"
        return d


def _arm_build(root: Path, core: Core, main_src: str, elf: str, flash_bytes: int, ram_bytes: int,
               check: bool = True) -> tuple[Path, str]:
    for name in ("startup.c", "semihost.h", "link.ld"):
        atomic_write_text(root / name, support_file(name))
    atomic_write_text(root / f"{elf}_main.c", main_src)
    cmd = [require_tool("arm-none-eabi-gcc"), *core.cflags, *ARM_CFLAGS, "-T", "link.ld", "-Wl,--gc-sections",
           f"-Wl,--defsym=FLASH_SIZE={flash_bytes}", f"-Wl,--defsym=RAM_SIZE={ram_bytes}",
           f"-Wl,--defsym=STACK_SIZE={STACK_BYTES}", "startup.c", f"{elf}_main.c", "model.c", "-lgcc",
           "-o", f"{elf}.elf"]
    proc = run_tool(cmd, cwd=root, check=check)
    return root / f"{elf}.elf", (proc.stderr or b"").decode(errors="replace") if proc.returncode else ""


def section_sizes(elf: Path) -> dict[str, int]:
    """Section name → bytes, from `arm-none-eabi-size -A`."""
    out = run_tool([require_tool("arm-none-eabi-size"), "-A", str(elf)]).stdout.decode()
    sizes = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            sizes[parts[0]] = int(parts[1])
    return sizes


def _flash_sram(sizes: dict[str, int]) -> tuple[int, int]:
    flash = sum(sizes.get(s, 0) for s in (".text", ".ARM.exidx", ".init_array", ".fini_array", ".data"))
    sram = sum(sizes.get(s, 0) for s in (".data", ".bss", ".stack"))
    return flash, sram


def check_memory_fit(project_dir: str | os.PathLike[str], core: str, flash_budget_bytes: int,
                     sram_budget_bytes: int) -> MemoryFit:
    """Link the project (with a one-inference main) with the linker's FLASH/RAM regions set to the budget
    (built in `<project_dir>/../build/fit-<core>`).

    When the link overflows, it is relinked with room to spare to measure the sizes; the result says how
    many bytes are missing per region (never raises for a model that does not fit).
    """
    root = stage_project(project_dir, Path(project_dir).parent / "build" / f"fit-{core}")
    c = CORES.get(core)
    elf, msg = _arm_build(root, c, DEPLOY_MAIN, "deploy", flash_budget_bytes, sram_budget_bytes, check=False)
    overflow = {m.group(1).upper(): int(m.group(2)) for m in _OVERFLOW.finditer(msg)}
    if msg and not overflow:
        raise ToolchainError(f"arm-none-eabi-gcc failed to link {root / 'deploy.elf'}:\n{msg[-3000:]}")
    if overflow:
        big = 1 << 30
        elf, _ = _arm_build(root, c, DEPLOY_MAIN, "deploy_unbounded", big, big)
    flash, sram = _flash_sram(section_sizes(elf))
    return MemoryFit(core, flash, sram, flash_budget_bytes, sram_budget_bytes, STACK_BYTES,
                     max(0, flash - flash_budget_bytes), max(0, sram - sram_budget_bytes), msg.strip()[-500:])


def _test_data(inputs: np.ndarray, expected: np.ndarray) -> str:
    def table(name: str, a: np.ndarray) -> str:
        rows = ",\n".join("    {" + ", ".join(str(int(v)) for v in row.reshape(-1)) + "}" for row in a)
        return f"static const int8_t {name}[{len(a)}][{a[0].size}] = {{\n{rows}\n}};"
    return "\n".join(["/* Generated by devicefit: test inputs and the integer reference's outputs. */",
                      "#ifndef TEST_DATA_H", "#define TEST_DATA_H", f"#define TEST_COUNT {len(inputs)}",
                      table("TEST_INPUTS", inputs), table("TEST_EXPECTED", expected), "#endif", ""])


def _plugin(root: Path) -> Path:
    so = root / "libicount.so"
    atomic_write_text(root / "qemu_icount_plugin.c", support_file("qemu_icount_plugin.c"))
    run_tool([require_tool("gcc"), "-O2", "-shared", "-fPIC", "-o", so.name, "qemu_icount_plugin.c"], cwd=root)
    return so


def _model_code_range(elf: Path) -> tuple[int, int]:
    """[lo, hi) of the model's functions (model_invoke and the df_* kernels, contiguous: model.c links last)."""
    out = run_tool([require_tool("arm-none-eabi-nm"), "-S", str(elf)]).stdout.decode()
    spans = []
    for line in out.splitlines():
        p = line.split()
        if len(p) == 4 and p[2] in "tT" and (p[3] == "model_invoke" or p[3].startswith("df_")):
            lo = int(p[0], 16) & ~1
            spans.append((lo, lo + int(p[1], 16)))
    if not spans:
        raise ToolchainError(f"{elf}: no model_invoke / df_* symbols found by arm-none-eabi-nm")
    return min(s[0] for s in spans), max(s[1] for s in spans)


def run_on_core(project_dir: str | os.PathLike[str], core: str, inputs: np.ndarray, expected: np.ndarray,
                *, timeout_s: float = 300) -> CoreRun:
    """Cross-compile the harness with `inputs` and the reference's `expected` outputs for `core` (in
    `<project_dir>/../build/qemu-<core>`), run it under QEMU (semihosting, `-icount shift=0`) with the
    instruction-count plugin on the model's code."""
    if len(inputs) != len(expected) or len(inputs) == 0:
        raise DataError(f"inputs and expected must be non-empty and of equal length, got {len(inputs)} inputs, "
                        f"{len(expected)} expected outputs")
    root, c = stage_project(project_dir, Path(project_dir).parent / "build" / f"qemu-{core}"), CORES.get(core)
    atomic_write_text(root / "test_data.h", _test_data(np.asarray(inputs), np.asarray(expected)))
    elf, _ = _arm_build(root, c, support_file("mcu_main.c"), "test", c.board_flash_bytes, c.board_ram_bytes)
    lo, hi = _model_code_range(elf)
    cmd = [require_tool("qemu-system-arm"), "-M", c.qemu_machine, "-display", "none", "-monitor", "none",
           "-serial", "none", "-chardev", "stdio,id=sh0", "-semihosting-config", "enable=on,target=native,chardev=sh0",
           "-icount", "shift=0", "-d", "plugin", "-plugin", f"{_plugin(root)},lo={lo},hi={hi}", "-kernel", str(elf)]
    proc = run_tool(cmd, timeout_s=timeout_s, check=False)
    return _parse_run(c, proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"),
                      len(inputs), np.asarray(expected))


def _parse_run(c: Core, rc: int, stdout: str, stderr: str, n: int, expected: np.ndarray) -> CoreRun:
    rows = [line.split()[1:] for line in stdout.splitlines() if line.startswith("out")]
    m = re.search(r"insns_total=(\d+) insns_in_range=(\d+)", stdout + stderr)
    if rc not in (0, 1) or len(rows) != n or m is None:
        raise ToolchainError(f"QEMU {c.qemu_machine} run failed (exit {rc}; 99 = CPU fault): got {len(rows)} of "
                             f"{n} outputs\nstdout: {stdout[-1500:]}\nstderr: {stderr[-1500:]}")
    outputs = np.array(rows, dtype=np.int64).astype(np.int8).reshape(expected.shape)
    mismatches = int((outputs != expected).sum())
    return CoreRun(c.name, c.qemu_machine, n, mismatches, mismatches == 0 and rc == 0,
                   int(m.group(2)) / n, int(m.group(1)), outputs)
