"""`hardware.channel_multiple`: the channel multiple a host target's fp32 convolutions run fastest at, from the
CPU's SIMD flags (measured: 8 on AVX2, 16 on AVX-512), and what `PruneConfig(round_to="auto")` accepts."""

from __future__ import annotations

import pytest

from devicefit.compress import PruneConfig, StructuredPruner
from devicefit.core import ConfigError, machine_info
from devicefit.hardware import channel_floor, channel_multiple
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
    assert channel_floor("host-ort", cpu_flags=flags) == (8 if want == 16 else 0)  # half a block on AVX-512 only


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


def test_round_floor_lets_the_narrowest_layers_halve_and_nothing_else_leaves_the_grid() -> None:
    """ResNet-8 (16/32/64 channels) at round_to=16: without a floor no layer goes below 16, so the 16-channel
    stage stays whole; with round_floor=8 layers may keep 8, and every kept count is 8 or a multiple of 16."""
    import torch
    from torch import nn

    def counts(cfg: PruneConfig) -> list[int]:
        torch.manual_seed(0)
        net = build(default_spec("resnet8"))
        out = StructuredPruner(cfg).fit(net, (3, 32, 32)).result_.model
        return [m.out_channels for m in out.modules() if isinstance(m, nn.Conv2d)]

    plain = counts(PruneConfig(ratio=0.6, round_to=16))
    floored = counts(PruneConfig(ratio=0.6, round_to=16, round_floor=8))
    assert min(plain) == 16 and all(c % 16 == 0 for c in plain)
    assert 8 in floored and all(c == 8 or c % 16 == 0 for c in floored)
    assert sum(floored) < sum(plain)
    for bad, match in ((-1, "round_floor must be an int >= 0"), (16, "must divide round_to"),
                       (6, "must divide round_to"), (True, "round_floor must be an int")):
        with pytest.raises(ConfigError, match=match):
            PruneConfig(round_to=16, round_floor=bad)
