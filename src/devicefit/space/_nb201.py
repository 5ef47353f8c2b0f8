"""The NAS-Bench-201 cell space (Dong & Yang, ICLR 2020): 6 edges × 5 ops, its macro network in PyTorch,
dead-edge analysis (`live_edges`, `prune_dead`) and the NB201 architecture string."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from devicefit.core import ArchSpec, ConfigError, Registry
from devicefit.hardware import NB201
from devicefit.nn import ConvBNAct

from ._base import CellSpace, register_space
from ._checks import check_image_shape, check_int
from ._tabular import TabularSpace

__all__ = ["EDGES", "NB201Cell", "NB201Network", "NB201Space", "arch_str", "build_nb201", "live_edges", "prune_dead"]

# (source node, target node) per position, in the tables' order (NB201.position_names); sorted by target,
# so one forward pass visits a node only after every edge into it.
EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
OUTPUT_NODE = 3


# --- dead-edge analysis ------------------------------------------------------------------------------------

def live_edges(spec: ArchSpec) -> tuple[bool, ...]:
    """Per position (table order): True when the edge's op is not `none` and it lies on a path of non-`none`
    edges from the cell input (node 0) to the cell output (node 3). Other edges cannot influence the output
    except through a constant (an op applied to an all-zero node), so a network may drop them."""
    ops = NB201.ops_of(spec)
    reached = {0}  # nodes with a non-none path from the input
    for (src, dst), op in zip(EDGES, ops, strict=True):
        if op != "none" and src in reached:
            reached.add(dst)
    reaching = {OUTPUT_NODE}  # nodes with a non-none path to the output; reverse order visits targets first
    for (src, dst), op in reversed(tuple(zip(EDGES, ops, strict=True))):
        if op != "none" and dst in reaching:
            reaching.add(src)
    return tuple(op != "none" and src in reached and dst in reaching for (src, dst), op in zip(EDGES, ops, strict=True))


def prune_dead(spec: ArchSpec) -> ArchSpec:
    """`spec` with every edge that is not live set to `none` (a canonical form for dead-op-free cells)."""
    keep = live_edges(spec)
    return NB201.spec([op if live else "none" for op, live in zip(NB201.ops_of(spec), keep, strict=True)])


def arch_str(spec: ArchSpec) -> str:
    """The NAS-Bench-201 string, e.g. `|nor_conv_3x3~0|+|none~0|skip_connect~1|+|...~0|...~1|...~2|`."""
    ops = NB201.ops_of(spec)
    nodes = [[f"{op}~{src}" for (src, dst), op in zip(EDGES, ops, strict=True) if dst == j] for j in (1, 2, 3)]
    return "+".join("|" + "|".join(node) + "|" for node in nodes)


# --- ops -------------------------------------------------------------------------------------------------

def _relu_conv_bn(channels: int, kernel_size: int, stride: int = 1) -> nn.Module:
    """NB201's ReLUConvBN: ReLU (not in place: the input feeds other edges) → conv (no bias) → BN."""
    return nn.Sequential(nn.ReLU(), ConvBNAct(channels, channels, kernel_size, stride, act="none"))


def _avg_pool(channels: int) -> nn.Module:
    return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)


# op name -> module factory (channels) -> (B, C, H, W) → (B, C, H, W); `none` edges are never built
OPS: Registry[Callable[[int], nn.Module]] = Registry("nb201 op")
OPS.add("skip_connect", lambda channels: nn.Identity())
OPS.add("nor_conv_1x1", lambda channels: _relu_conv_bn(channels, 1))
OPS.add("nor_conv_3x3", lambda channels: _relu_conv_bn(channels, 3))
OPS.add("avg_pool_3x3", _avg_pool)


class NB201Cell(nn.Module):
    """One cell, (B, C, H, W) → (B, C, H, W): node 0 is the input, node j = Σ_{i<j} op_{i→j}(node i), output
    node 3. Only the edges in `keep` are built (never `none`); a node with no kept input edge is absent (zero),
    and when node 3 is absent the cell outputs zeros shaped like its input."""

    def __init__(self, ops: Sequence[str], channels: int, keep: Sequence[bool]) -> None:
        super().__init__()
        self.ops = tuple(ops)
        self.plan = tuple(edge for edge, k, op in zip(EDGES, keep, ops, strict=True) if k and op != "none")
        self.edges = nn.ModuleList(OPS.get(op)(channels) for k, op in zip(keep, ops, strict=True)
                                   if k and op != "none")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes: list[torch.Tensor | None] = [x, None, None, None]
        for (src, dst), op in zip(self.plan, self.edges, strict=True):
            inp = nodes[src]
            y = op(_zeros_like(x) if inp is None else inp)  # an absent source is zero (unpruned cells)
            acc = nodes[dst]
            nodes[dst] = y if acc is None else acc + y
        out = nodes[OUTPUT_NODE]
        return _zeros_like(x) if out is None else out


def _zeros_like(x: torch.Tensor) -> torch.Tensor:
    """Zeros computed from `x` (x · 0, one Mul) rather than `torch.zeros_like`: the exporter folds the latter
    into a constant and, when a whole network is dead, drops the graph input, which ONNX Runtime then rejects.
    (Non-finite inputs give NaN here, not 0.)"""
    return x * 0.0


class _ResidualReduction(nn.Module):
    """NB201's ResNet basic block between stages: (B, C_in, H, W) → (B, C_out, ⌈H/2⌉, ⌈W/2⌉);
    ReLU-Conv3×3(s2)-BN → ReLU-Conv3×3-BN plus a shortcut of 2×2 average pool → 1×1 conv (no BN)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv_a = nn.Sequential(nn.ReLU(), ConvBNAct(in_channels, out_channels, 3, 2, act="none"))
        self.conv_b = nn.Sequential(nn.ReLU(), ConvBNAct(out_channels, out_channels, 3, 1, act="none"))
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, stride=2), nn.Conv2d(in_channels, out_channels, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


class NB201Network(nn.Module):
    """The NAS-Bench-201 macro network: stem (3×3 conv to C + BN), stages of N cells at C, 2C, 4C channels
    joined by residual reductions, then BN → ReLU → global average pool → linear.
    (B, in_channels, H, W) → (B, num_classes)."""

    def __init__(self, ops: Sequence[str], keep: Sequence[bool], *, num_classes: int, in_channels: int,
                 C: int, N: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvBNAct(in_channels, C, 3, act="none")]
        for stage, width in enumerate((C, 2 * C, 4 * C)):
            if stage:
                layers.append(_ResidualReduction(width // 2, width))
            layers.extend(NB201Cell(ops, width, keep) for _ in range(N))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.BatchNorm2d(4 * C), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.classifier = nn.Linear(4 * C, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(self.features(x)))  # (B, num_classes)


def build_nb201(
    spec: ArchSpec,
    *,
    num_classes: int = 10,
    input_shape: Sequence[int] = (3, 32, 32),
    C: int = 16,
    N: int = 5,
    prune: bool = True,
) -> NB201Network:
    """A fresh NAS-Bench-201 network for the cell `spec`; (B, *input_shape) → (B, num_classes), H and W
    multiples of 4. Parameter count at the defaults for all-`nor_conv_3x3`: 1,531,546 (the published figure).

    `prune=True` builds only `live_edges` (dead ops would add parameters and latency but, apart from a
    constant, nothing to the output); `prune=False` builds every non-`none` edge as the reference code does,
    so parameter counts match the NAS-Bench-201 tables for cells with dead edges. `none` is never built.
    """
    ops = NB201.ops_of(spec)
    shape = check_image_shape(input_shape, 4, "nb201")
    if shape[1] % 4 or shape[2] % 4:  # the reductions' shortcut (2×2 pool) floors odd sizes, the conv ceils them
        raise ConfigError(f"input_shape must have H and W divisible by 4 for nb201 (two stride-2 reductions), "
                          f"got {shape}")
    for name, value in (("num_classes", num_classes), ("C", C), ("N", N)):
        check_int(name, value, 1)
    keep = live_edges(spec) if prune else tuple(op != "none" for op in ops)
    return NB201Network(ops, keep, num_classes=num_classes, in_channels=shape[0], C=C, N=N)


@register_space
class NB201Space(TabularSpace, CellSpace):
    """NAS-Bench-201: 15,625 cells (6 edges × {none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3}),
    with measured accuracy (CIFAR-10/100, ImageNet16-120) and latency tables."""

    name: ClassVar[str] = "nb201"
    encoding = NB201
    accuracy_family: ClassVar[str | None] = "nb201"

    def build(self, spec: ArchSpec, **kwargs: Any) -> nn.Module:
        """`build_nb201(spec, num_classes=10, input_shape=(3, 32, 32), C=16, N=5, prune=True)`."""
        return build_nb201(self.validate(spec), **kwargs)

    live_edges = staticmethod(live_edges)
    prune_dead = staticmethod(prune_dead)
    arch_str = staticmethod(arch_str)
