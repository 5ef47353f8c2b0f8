"""Layer features of the table spaces for the tree predictor: one-hot, op indices, op counts, and
space-specific structure (NB201 live paths; FBNet per-stage kernel·expansion and a MAC estimate)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from devicefit.core import Registry

from ._encoding import FBNET, NB201, CellEncoding

__all__ = ["FEATURES", "layer_features", "nb201_live_edges"]

FeatureFn = Callable[[CellEncoding, np.ndarray], np.ndarray]
FEATURES: Registry[FeatureFn] = Registry("layer-feature set")

# NB201 edge list in the tables' position order (source node, target node).
_NB201_EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
# FBNet (22 layers, CIFAR input per HELP): stage sizes, output channels, feature-map side.
_FBNET_STAGES = (1, 4, 4, 4, 4, 4, 1)
_FBNET_CHANNELS = (16, 24, 32, 64, 112, 184, 352)
_FBNET_SIDE = (32, 32, 16, 8, 8, 4, 4)


def layer_features(enc: CellEncoding, idx: np.ndarray) -> np.ndarray:
    """(N, F) float32 features of (N, positions) op indices: generic part + the family's own."""
    n_ops = len(enc.ops)
    onehot = np.eye(n_ops, dtype=np.float32)[idx].reshape(len(idx), -1)
    counts = np.stack([(idx == k).sum(axis=1) for k in range(n_ops)], axis=1).astype(np.float32)
    parts = [onehot, idx.astype(np.float32), counts]
    if enc.family in FEATURES:
        parts.append(FEATURES.get(enc.family)(enc, idx))
    return np.concatenate(parts, axis=1)


def nb201_live_edges(idx: np.ndarray) -> np.ndarray:
    """(N, 6) bool: an edge is live when it is not `none` and lies on a path from node 0 to node 3."""
    on = idx != NB201.ops.index("none")
    reach_from_in = np.zeros((len(idx), 4), dtype=bool)
    reach_from_in[:, 0] = True
    for e, (i, j) in enumerate(_NB201_EDGES):  # edges are in topological order of their target
        reach_from_in[:, j] |= reach_from_in[:, i] & on[:, e]
    reach_out = np.zeros((len(idx), 4), dtype=bool)
    reach_out[:, 3] = True
    for e, (i, j) in reversed(list(enumerate(_NB201_EDGES))):
        reach_out[:, i] |= reach_out[:, j] & on[:, e]
    src = np.array([i for i, _ in _NB201_EDGES])
    dst = np.array([j for _, j in _NB201_EDGES])
    return on & reach_from_in[:, src] & reach_out[:, dst]


@FEATURES.register("nb201")
def _nb201_features(enc: CellEncoding, idx: np.ndarray) -> np.ndarray:
    live = nb201_live_edges(idx)
    live_counts = np.stack([((idx == k) & live).sum(axis=1) for k in range(len(enc.ops))], axis=1)
    connected = live[:, [3, 4, 5]].any(axis=1, keepdims=True)
    live_idx = np.where(live, idx, -1)
    return np.concatenate([live.astype(np.float32), live_counts, connected, live_idx], axis=1).astype(np.float32)


def _fbnet_layer_table() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per layer: stage id, input channels, output channels, output side (stride on a stage's first layer)."""
    stage, cin, cout, side = [], [], [], []
    prev = 16
    for s, (n, c, hw) in enumerate(zip(_FBNET_STAGES, _FBNET_CHANNELS, _FBNET_SIDE, strict=True)):
        for k in range(n):
            stage.append(s)
            cin.append(prev if k == 0 else c)
            cout.append(c)
            side.append(hw)
        prev = c
    return np.array(stage), np.array(cin), np.array(cout), np.array(side)


def _fbnet_op_params() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per op: kernel, expansion, groups, is-skip (parsed from names like `k5_e1_g2`)."""
    kernel, expand, groups, skip = [], [], [], []
    for op in FBNET.ops:
        parts = op.split("_")
        skip.append(op == "skip")
        kernel.append(0 if op == "skip" else int(parts[0][1:]))
        expand.append(0 if op == "skip" else int(parts[1][1:]))
        groups.append(int(parts[2][1:]) if len(parts) > 2 else 1)
    return np.array(kernel), np.array(expand), np.array(groups), np.array(skip)


@FEATURES.register("fbnet")
def _fbnet_features(enc: CellEncoding, idx: np.ndarray) -> np.ndarray:
    stage, cin, cout, side = _fbnet_layer_table()
    kernel, expand, groups, skip = (a[idx] for a in _fbnet_op_params())  # each (N, 22)
    hidden = cin * np.maximum(expand, 1)
    macs = (cin * hidden * (expand > 1) / groups + kernel**2 * hidden + hidden * cout / groups) * side**2
    macs = np.where(skip, 0.0, macs) / 1e6
    ke = kernel * expand
    per_stage = []
    for s in range(len(_FBNET_STAGES)):
        m = stage == s
        per_stage += [ke[:, m].sum(1), kernel[:, m].sum(1), expand[:, m].sum(1), skip[:, m].sum(1), macs[:, m].sum(1)]
    total = [macs.sum(1), ke.sum(1), (groups > 1).sum(1)]
    return np.concatenate([macs, np.stack(per_stage + total, axis=1)], axis=1).astype(np.float32)
