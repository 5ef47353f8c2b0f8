"""The channel multiple a host target's fp32 convolutions run fastest at: what structured pruning should round
kept channel counts to (`PruneConfig.round_to="auto"`).

ONNX Runtime's CPU convolutions block channels by the SIMD width in fp32 lanes, and a layer whose channel count
is not a multiple of the block pays for the whole block (`benchmarks/channel_multiple.py`, three 3×3
convolutions at every channel count, side by side): on this VM's AVX2 EPYC only multiples of 8 are cheap
(`channel-multiple-epyc.md`), on an AVX-512 Xeon the steps are 16 channels (`channel-multiple-xeon.md`).
Those two are measured; a CPU with neither flag gets 4 (128-bit vectors: SSE, NEON), by the same rule, not
measured. Below one block, half a block still pays on AVX-512: 8 channels ran in 0.59x the time of 16 on the
Zen 5 VM and 0.60x on the Xeon (`channel-multiple-zen5.md`, `channel-multiple-xeon.md`), so
`channel_floor` lets pruning take a 16-channel layer to 8 there (`PruneConfig.round_floor`).
"""

from __future__ import annotations

from collections.abc import Iterable

from devicefit.core import machine_info

from ._profile import _host_target
from ._target import Target

__all__ = ["channel_floor", "channel_multiple"]


def channel_multiple(target: str | Target, cpu_flags: Iterable[str] | None = None) -> int:
    """16 with AVX-512 (avx512f), 8 with AVX or AVX2, else 4: the fp32 SIMD width of the CPU that runs the host
    `target` (this machine; `cpu_flags` overrides its flags, e.g. to prune for another machine). A non-host
    target → ConfigError naming the host targets (only they run here to be measured)."""
    _host_target(target)
    flags = set(machine_info()["cpu_flags"] if cpu_flags is None else cpu_flags)
    if "avx512f" in flags:
        return 16
    if flags & {"avx", "avx2"}:
        return 8
    return 4


def channel_floor(target: str | Target, cpu_flags: Iterable[str] | None = None) -> int:
    """8 with AVX-512 (half of `channel_multiple`'s 16: measured cheaper than 16 on both AVX-512 CPUs), else 0
    (no count below the multiple): the `PruneConfig.round_floor` that `round_to="auto"` uses. Same arguments
    and errors as `channel_multiple`."""
    multiple = channel_multiple(target, cpu_flags)
    return multiple // 2 if multiple == 16 else 0
