"""NAS-Bench-201: enumeration, the macro network (shapes, published parameter count), dead-edge pruning, ONNX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from devicefit.core import ArchSpec, ConfigError
from devicefit.hardware import NB201
from devicefit.nn import export_onnx
from devicefit.space import EDGES, NB201Network, arch_str, build_nb201, get_space, live_edges, prune_dead

SPACE = get_space("nb201")
MIXED = ("nor_conv_3x3", "avg_pool_3x3", "skip_connect", "none", "nor_conv_1x1", "nor_conv_3x3")
TINY = {"C": 4, "N": 1}  # the same topology at a fraction of the cost, for shape tests


def _spec(*ops: str):  # type: ignore[no-untyped-def]
    return NB201.spec(ops)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _randomize_bn(model: nn.Module, shape: tuple[int, ...] = (3, 32, 32)) -> nn.Module:
    """Eval mode with BN statistics measured on one random batch and random BN affine terms.

    Fresh weights with the default (identity-like) BN statistics shrink the signal by ~3× per conv, so after
    15 cells the output would be a constant; calibrated statistics keep it input-dependent (no training)."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one batch sets the statistics
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    model.train()
    with torch.no_grad():
        model(torch.randn(4, *shape))
    return model.eval()


def test_enumerate_yields_every_cell_once() -> None:
    specs = list(SPACE.enumerate())
    assert len(specs) == SPACE.size == 15_625 == len(set(specs))
    assert all(s.family == "nb201" for s in specs[:50])
    assert specs[0] == _spec(*["none"] * 6) and specs[-1] == _spec(*["avg_pool_3x3"] * 6)
    assert NB201.to_code(specs[1]) == "000001"  # code order: last position fastest


def test_arch_str_matches_the_table_string() -> None:
    spec = NB201.from_code("334131")  # NB201 index 1 in the tables
    assert arch_str(spec) == ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+"
                              "|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")


def test_all_conv3x3_network_has_the_published_parameter_count() -> None:
    # NAS-Bench-201 lists 1.531546 M parameters for this cell (C=16, N=5, CIFAR-10): stem 464,
    # cells 5·(14,016 + 55,680 + 221,952), reductions 14,464 + 57,600, head BN 128, linear 650.
    model = SPACE.build(_spec(*["nor_conv_3x3"] * 6), num_classes=10, C=16, N=5)
    assert _params(model) == 1_531_546


def test_parameter_counts_of_other_cells() -> None:
    assert _params(build_nb201(_spec(*["none"] * 6))) == 73_306  # stem, reductions and head only
    assert _params(build_nb201(_spec(*["skip_connect"] * 6))) == 73_306
    assert _params(build_nb201(_spec(*["nor_conv_1x1"] * 6))) == 73_306 + 5 * 6 * (16 * 18 + 32 * 34 + 64 * 66)


@pytest.mark.parametrize("ops", [("none",) * 6, ("skip_connect",) * 6, ("nor_conv_3x3",) * 6, MIXED,
                                 ("avg_pool_3x3",) * 6], ids=["none", "skip", "conv3x3", "mixed", "pool"])
def test_forward_shape(ops: tuple[str, ...]) -> None:
    model = SPACE.build(_spec(*ops), num_classes=7, **TINY).eval()
    with torch.no_grad():
        out = model(torch.randn(3, 3, 32, 32))
    assert isinstance(model, NB201Network) and out.shape == (3, 7) and torch.isfinite(out).all()


def test_default_network_forward_shape() -> None:
    with torch.no_grad():
        out = SPACE.build(_spec(*MIXED)).eval()(torch.randn(1, 3, 32, 32))
    assert out.shape == (1, 10)


def test_build_accepts_other_input_shapes_and_checks_arguments() -> None:
    with torch.no_grad():
        assert SPACE.build(_spec(*MIXED), input_shape=(1, 16, 12), **TINY)(torch.randn(2, 1, 16, 12)).shape == (2, 10)
    with pytest.raises(ConfigError, match=r"input_shape .* too small for nb201"):
        SPACE.build(_spec(*MIXED), input_shape=(3, 2, 2))
    with pytest.raises(ConfigError, match=r"H and W divisible by 4 .*got \(3, 30, 32\)"):
        SPACE.build(_spec(*MIXED), input_shape=(3, 30, 32))
    with pytest.raises(ConfigError, match="C must be an int >= 1, got 0"):
        SPACE.build(_spec(*MIXED), C=0)
    with pytest.raises(ConfigError, match="N must be an int >= 1"):
        SPACE.build(_spec(*MIXED), N=1.5)
    with pytest.raises(ConfigError, match="op 'conv' at e0_3"):
        SPACE.build(ArchSpec("nb201", {"ops": ["none"] * 3 + ["conv"] + ["none"] * 2}))


# ---- dead edges --------------------------------------------------------------------------------------------

LIVE_CASES = [
    # (ops in table order e0_1, e0_2, e1_2, e0_3, e1_3, e2_3), expected live
    (("none",) * 6, (False,) * 6),
    (("skip_connect",) * 6, (True,) * 6),
    # 0→1 dead-ends at node 1, node 2 has no input: nothing reaches the output
    (("nor_conv_3x3", "none", "none", "none", "none", "nor_conv_3x3"), (False,) * 6),
    # only the direct edge 0→3 lives; 1→2 starts at an unreachable node, 2→3 too
    (("none", "none", "nor_conv_3x3", "skip_connect", "none", "nor_conv_1x1"),
     (False, False, False, True, False, False)),
    # a chain 0→1→2 that never reaches node 3
    (("nor_conv_3x3", "none", "skip_connect", "none", "none", "none"), (False,) * 6),
    # the chain 0→1→2→3
    (("nor_conv_3x3", "none", "skip_connect", "none", "none", "avg_pool_3x3"),
     (True, False, True, False, False, True)),
    # 0→2 lives via 2→3; 0→1 dead-ends (1 has no way out)
    (("nor_conv_1x1", "skip_connect", "none", "none", "none", "nor_conv_3x3"),
     (False, True, False, False, False, True)),
    (MIXED, (True, True, True, False, True, True)),
]


@pytest.mark.parametrize(("ops", "live"), LIVE_CASES)
def test_live_edges_on_hand_checked_cells(ops: tuple[str, ...], live: tuple[bool, ...]) -> None:
    spec = _spec(*ops)
    assert live_edges(spec) == live == SPACE.live_edges(spec)
    pruned = prune_dead(spec)
    assert pruned["ops"] == tuple(op if k else "none" for op, k in zip(ops, live, strict=True))
    assert live_edges(pruned) == live and prune_dead(pruned) == pruned


def _live_by_reachability(ops: tuple[str, ...]) -> tuple[bool, ...]:
    """Independent reference: transitive closure of the 4-node adjacency matrix."""
    adj = np.zeros((4, 4), dtype=np.int64)
    for (src, dst), op in zip(EDGES, ops, strict=True):
        adj[src, dst] = op != "none"
    reach = np.eye(4, dtype=np.int64)
    for _ in range(3):
        reach = np.minimum(reach + reach @ adj, 1)
    return tuple(bool(adj[s, d] and reach[0, s] and reach[d, 3]) for s, d in EDGES)


def test_live_edges_agree_with_reachability_on_every_cell() -> None:
    dead_outputs = 0
    for spec in SPACE.enumerate():
        live = live_edges(spec)
        assert live == _live_by_reachability(spec["ops"]), spec
        dead_outputs += not any(live)
    # output unreachable: 0→3 none and no path through 1 or 2 (counted by hand: 4 · (5³ · 5² - paths))
    assert 0 < dead_outputs < 15_625


def test_pruning_drops_dead_ops_from_the_network() -> None:
    spec = _spec("nor_conv_3x3", "none", "nor_conv_3x3", "skip_connect", "none", "none")  # 0→1→2 dead-ends
    pruned, full = build_nb201(spec, **TINY), build_nb201(spec, prune=False, **TINY)
    assert _params(pruned) == _params(build_nb201(_spec(*["none"] * 6), **TINY))  # only the skip 0→3 is left
    # two 3×3 conv-BN edges per cell, one cell per stage at C = 4, 8, 16
    assert _params(full) - _params(pruned) == sum(2 * (c * 9 * c + 2 * c) for c in (4, 8, 16))
    x = torch.randn(2, 3, 32, 32)
    for m in (pruned, full):
        _randomize_bn(m)
    full.load_state_dict(pruned.state_dict(), strict=False)
    with torch.no_grad():
        assert torch.allclose(pruned(x), full(x), atol=1e-6)  # the dead branch never reaches the output


def test_a_dead_cell_outputs_zeros() -> None:
    model = _randomize_bn(build_nb201(_spec(*["none"] * 6), **TINY))
    cell = model.features[1]
    x = torch.randn(2, 4, 8, 8)
    assert torch.equal(cell(x), torch.zeros_like(x))
    with torch.no_grad():
        a, b = model(torch.randn(1, 3, 32, 32)), model(torch.randn(1, 3, 32, 32))
    assert torch.equal(a, b)  # nothing from the input reaches the classifier


# ---- ONNX --------------------------------------------------------------------------------------------------

def _ort_parity(model: nn.Module, tmp_path: Path, shape: tuple[int, ...] = (3, 32, 32)) -> float:
    path = export_onnx(model, shape, tmp_path / "nb201.onnx", dynamic_batch=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x).numpy()
    got = sess.run(None, {"input": x.numpy()})[0]
    assert got.shape == ref.shape
    return float(np.abs(got - ref).max())


@pytest.mark.slow
def test_onnx_parity_of_a_mixed_cell(tmp_path: Path) -> None:
    model = _randomize_bn(SPACE.build(_spec(*MIXED), C=8, N=2))
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert not torch.allclose(out[0], out[1])  # input-dependent, so parity means something
    assert _ort_parity(model, tmp_path) < 1e-4


def test_onnx_parity_of_a_dead_network(tmp_path: Path) -> None:
    # every cell outputs zeros: the graph must still take the input (ONNX Runtime rejects an unknown feed)
    model = _randomize_bn(SPACE.build(_spec(*["none"] * 6), **TINY))
    assert _ort_parity(model, tmp_path) < 1e-4


def test_onnx_parity_of_a_partly_dead_cell(tmp_path: Path) -> None:
    model = _randomize_bn(SPACE.build(_spec("none", "none", "nor_conv_3x3", "skip_connect", "none", "nor_conv_1x1"),
                                      C=8, N=2))
    assert _ort_parity(model, tmp_path) < 1e-4
