"""Which machine a figure came from: CPU model and flags, cores, OS, Python (stdlib only)."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["machine_info"]

# Flags that change which kernels a runtime picks; recorded, never assumed.
_INTERESTING_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni",
                      "amx_tile", "amx_int8", "amx_bf16", "f16c", "sse4_2", "neon", "asimd", "asimddp")


@functools.cache
def machine_info() -> dict[str, Any]:
    """A JSON-ready description of this machine, detected at run time."""
    model, flags = _cpuinfo()
    return {
        "hostname": platform.node(),
        "system": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu_model": model or platform.processor() or "unknown",
        "cpu_flags": sorted(f for f in flags if f in _INTERESTING_FLAGS),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
    }


def _cpuinfo() -> tuple[str, set[str]]:
    path = Path("/proc/cpuinfo")
    if not path.exists():
        return "", set()
    model, flags = "", set[str]()
    for line in path.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Hardware", "CPU part") and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return model, flags
