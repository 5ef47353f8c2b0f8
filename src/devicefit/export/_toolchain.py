"""Real tool chains: host gcc with sanitizers, arm-none-eabi-gcc for Cortex-M cores, QEMU with semihosting
and an instruction-count TCG plugin, and `arm-none-eabi-size`. Cores are data in `CORES`."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from devicefit.core import DevicefitError, Registry, atomic_write_text

__all__ = ["CORES", "Core", "ToolchainError", "build_host", "require_tool", "run_host", "run_tool", "stage_project",
           "support_file"]

DEBIAN_PACKAGES = {"gcc": "gcc", "arm-none-eabi-gcc": "gcc-arm-none-eabi libnewlib-arm-none-eabi",
                   "arm-none-eabi-size": "binutils-arm-none-eabi", "arm-none-eabi-nm": "binutils-arm-none-eabi",
                   "qemu-system-arm": "qemu-system-arm"}
HOST_CFLAGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-O1", "-g", "-fsanitize=address,undefined",
               "-fno-sanitize-recover=all", "-fno-omit-frame-pointer")


class ToolchainError(DevicefitError):
    """A tool is missing or failed; the message names the tool, the Debian package and the output."""


@dataclass(frozen=True)
class Core:
    """A Cortex-M core: compiler flags, the QEMU board that emulates it and that board's memory
    (what a QEMU run may use; a target's budgets are checked with a separate link)."""

    name: str
    cflags: tuple[str, ...]
    qemu_machine: str
    board_flash_bytes: int
    board_ram_bytes: int


CORES: Registry[Core] = Registry("Cortex-M core")
CORES.add("cortex-m4", Core("cortex-m4", ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"),
                            "mps2-an386", 4 << 20, 4 << 20))
CORES.add("cortex-m7", Core("cortex-m7", ("-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16"),
                            "mps2-an500", 4 << 20, 4 << 20))
CORES.add("cortex-m55", Core("cortex-m55", ("-mcpu=cortex-m55", "-mthumb", "-mfloat-abi=hard"),
                             "mps3-an547", 512 << 10, 512 << 10))  # AN547 ITCM / DTCM are 512 KiB each


def require_tool(name: str) -> str:
    """Absolute path of `name`, or `ToolchainError` saying which Debian package provides it."""
    path = shutil.which(name)
    if path is None:
        pkg = DEBIAN_PACKAGES.get(name, name)
        raise ToolchainError(f"{name} not found on PATH; install it with `sudo apt-get install {pkg}` "
                             f"(the Makefile's toolchain target installs gcc-arm-none-eabi "
                             f"libnewlib-arm-none-eabi qemu-system-arm)")
    return path


def run_tool(cmd: list[str], *, cwd: Path | None = None, timeout_s: float = 300, stdin: bytes | None = None,
         check: bool = True) -> subprocess.CompletedProcess[bytes]:
    try:
        proc = subprocess.run(cmd, cwd=cwd, input=stdin, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as e:
        raise ToolchainError(f"{Path(cmd[0]).name} timed out after {timeout_s:.0f} s: {' '.join(cmd)}") from e
    if check and proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).decode(errors="replace")[-3000:]
        raise ToolchainError(f"{Path(cmd[0]).name} exited with {proc.returncode}: {' '.join(cmd)}\n{tail}")
    return proc


def support_file(name: str) -> str:
    """Text of a bundled C support file (startup.c, link.ld, semihost.h, harnesses, the QEMU plugin)."""
    return resources.files("devicefit.export").joinpath("csrc", name).read_text(encoding="utf-8")


def stage_project(project_dir: str | os.PathLike[str], build_dir: str | os.PathLike[str]) -> Path:
    """Copy model.c and model.h of a generated project into `build_dir` (created) and return it,
    so builds never add files to the project itself."""
    src, root = Path(project_dir), Path(build_dir)
    for name in ("model.c", "model.h"):
        if not (src / name).is_file():
            raise ToolchainError(f"{src / name} not found: expected a project written by generate_c(...).write()")
        atomic_write_text(root / name, (src / name).read_text(encoding="utf-8"))
    return root


def build_host(project_dir: str | os.PathLike[str], build_dir: str | os.PathLike[str] | None = None, *,
               sanitize: bool = True) -> Path:
    """Compile model.c + the host harness with gcc -std=c99 -Wall -Wextra -Werror and, by default,
    AddressSanitizer + UBSan (`sanitize=False`: plain -O2, for long runs), in `build_dir` (default:
    `<project_dir>/../build/host` or `host-O2`); returns the executable."""
    default = Path(project_dir).parent / "build" / ("host" if sanitize else "host-O2")
    root = stage_project(project_dir, build_dir or default)
    atomic_write_text(root / "host_main.c", support_file("host_main.c"))
    exe = root / "model_host"
    flags = HOST_CFLAGS if sanitize else (*HOST_CFLAGS[:4], "-O2")
    run_tool([require_tool("gcc"), *flags, "model.c", "host_main.c", "-o", exe.name], cwd=root)
    return exe


def run_host(exe: str | os.PathLike[str], inputs: np.ndarray, output_bytes: int) -> np.ndarray:
    """Run the sanitized host build on int8 `inputs` (N, ...); returns int8 (N, output_bytes).
    Any sanitizer report fails the run (`-fno-sanitize-recover`), raising `ToolchainError`."""
    x = np.ascontiguousarray(inputs, dtype=np.int8)
    proc = run_tool([str(Path(exe).resolve())], stdin=x.tobytes())
    out = np.frombuffer(proc.stdout, dtype=np.int8)
    if out.size != len(x) * output_bytes or proc.stderr:
        raise ToolchainError(f"{exe}: expected {len(x) * output_bytes} output bytes and no diagnostics, got "
                             f"{out.size} bytes; stderr: {proc.stderr.decode(errors='replace')[-2000:]}")
    return out.reshape(len(x), output_bytes)
