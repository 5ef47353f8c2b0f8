"""`hardware.channel_multiple`: the channel multiple a host target's fp32 convolutions run fastest at, from the
CPU's SIMD flags (measured: 8 on AVX2, 16 on AVX-512), and what `PruneConfig(round_to="auto")` accepts."""

from __future__ import annotations

import pytest

from devicefit.compress import PruneConfig, StructuredPruner
from devicefit.core import ConfigError, machine_info
from devicefit.hardware import channel_multiple
from devicefit.models import build, default_spec


@pytest.mark.parametrize(("flags", "want"), [
    ({"avx", "avx2", "fma", "avx512f", "avx512_vnni"}, 16),
    ({"avx", "avx2", "fma"}, 8),
    ({"avx"}, 8),
    ({"sse4_2"}, 4),
    ({"neon", "asimd"}, 4),
    (set(), 4),
])
def test_channel_multiple_follows_the_simd_width(flags: set[str], want: int) -> None:
    assert channel_multiple("host-ort", cpu_flags=flags) == want


def test_channel_multiple_of_this_machine_and_of_non_host_targets() -> None:
    flags = set(machine_info()["cpu_flags"])
    assert channel_multiple("host-ort") == channel_multiple("host-ort", cpu_flags=flags)
    with pytest.raises(ConfigError, match="host targets"):
        channel_multiple("cortex-m4-256k")


def test_round_to_auto_is_a_config_value_the_pruner_refuses_unresolved() -> None:
    assert PruneConfig(round_to="auto").round_to == "auto"
    for bad in ("wide", 0, True, 2.5):
        with pytest.raises(ConfigError, match="round_to must be an int >= 1 or 'auto'"):
            PruneConfig(round_to=bad)
    net = build(default_spec("resnet8", width_mult=0.5))
    with pytest.raises(ConfigError, match=r"resolve it first with hardware\.channel_multiple"):
        StructuredPruner(PruneConfig(round_to="auto")).fit(net, (3, 32, 32))
