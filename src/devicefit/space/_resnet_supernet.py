"""The weight-sharing supernet of the `resnet_cifar` space: every stage holds its deepest (4 blocks) and widest
(width 2.0) weights; a path uses the first depth_s blocks and the first c_s channels (OFA-style elastic depth
and width), and `extract(spec)` copies those slices into the plain zoo `resnet_cifar` network."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from devicefit import models
from devicefit.core import ArchSpec, ConfigError
from devicefit.nn import BasicBlock, ConvBNAct, make_divisible

from ._base import get_space
from ._checks import check_image_shape, check_int
from ._resnet import DEPTH_CHOICES, RESNET_WIDTHS, ResNetSpace
from ._supernet import ElasticConvBN, SinglePathSupernet

__all__ = ["ResNetSupernet"]


class _ElasticBasicBlock(nn.Module):
    """A `BasicBlock` at its widest: conv3×3 (stride) → BN → ReLU → conv3×3 → BN, plus the shortcut, → ReLU.
    The shortcut is a 1×1 conv (stride) + BN projection exactly where `BasicBlock` has one (stride 2 or a
    channel change, which in this space is the first block of stages 1, 2), else identity."""

    def __init__(self, max_in: int, max_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ElasticConvBN(max_in, max_out, 3, stride, act="none")
        self.conv2 = ElasticConvBN(max_out, max_out, 3, 1, act="none")
        self.shortcut = ElasticConvBN(max_in, max_out, 1, stride, act="none") if stride != 1 else None

    def forward(self, x: Tensor, c_out: int) -> Tensor:
        identity = x if self.shortcut is None else self.shortcut(x, c_out)
        return F.relu(self.conv2(F.relu(self.conv1(x, c_out)), c_out) + identity)

    def load_from_(self, block: BasicBlock) -> None:
        self.conv1.load_from_(block.conv1)
        self.conv2.load_from_(block.conv2)
        if self.shortcut is not None and block.shortcut is not None:
            self.shortcut.load_from_(block.shortcut)  # type: ignore[arg-type]

    def copy_to(self, block: BasicBlock) -> None:
        if (self.shortcut is None) != (block.shortcut is None):
            raise ConfigError(f"supernet block and target BasicBlock({block.in_channels}, {block.out_channels}) "
                              "disagree on the projection shortcut")
        self.conv1.copy_to(block.conv1)
        self.conv2.copy_to(block.conv2)
        if self.shortcut is not None:
            self.shortcut.copy_to(block.shortcut)  # type: ignore[arg-type]


class ResNetSupernet(SinglePathSupernet):
    """Single-path supernet of a `ResNetSpace` (default "resnet_cifar"); (B, *input_shape) → (B, num_classes).

    `set_active(spec)` picks the path `forward` runs (the first depths[s] blocks of stage s, the first
    channels[s] channels, the stem at stage 0's channels); `sample(rng)` draws a uniform spec, activates and
    returns it; `extract(spec=None)` returns a fresh `models.build(space.model_spec(spec))` network holding
    copies of the shared weights, whose outputs equal the supernet's on that path (same mode; eval for BN
    running statistics). Running statistics of the used channels are updated in place in training mode.
    """

    def __init__(self, space: str | ResNetSpace = "resnet_cifar", *, num_classes: int = 10,
                 input_shape: Sequence[int] | None = None) -> None:
        super().__init__()
        sp = get_space(space) if isinstance(space, str) else space
        if not isinstance(sp, ResNetSpace):
            raise ConfigError(f"ResNetSupernet needs a ResNet space, got {sp.name!r}")
        self.space: ResNetSpace = sp
        check_int("num_classes", num_classes, 1)
        self.num_classes = num_classes
        n = len(self.space.stages)
        self.input_shape = check_image_shape(tuple(input_shape or self.space.input_shape), 2 ** (n - 1),
                                             self.space.name)
        self.max_channels = tuple(max(make_divisible(c * w) for w in RESNET_WIDTHS) for c in self.space.stages)
        self.stem = ElasticConvBN(self.input_shape[0], self.max_channels[0], 3, 1, act="none")
        c_in, stages = self.max_channels[0], []
        for s, c_out in enumerate(self.max_channels):
            blocks = [_ElasticBasicBlock(c_in if i == 0 else c_out, c_out, 2 if s > 0 and i == 0 else 1)
                      for i in range(max(DEPTH_CHOICES))]
            stages.append(nn.ModuleList(blocks))
            c_in = c_out
        self.stages = nn.ModuleList(stages)
        self.fc = nn.Linear(c_in, num_classes)
        self.active_: ArchSpec | None = None

    # -- forward ------------------------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        spec = self._active()
        chans = self.space.stage_channels(spec)
        y = F.relu(self.stem(x, chans[0]))
        for s, c in enumerate(chans):
            for block in self._path(s, spec["depths"][s]):
                y = block(y, c)
        y = torch.flatten(F.adaptive_avg_pool2d(y, 1), 1)  # (B, c_last)
        return F.linear(y, self.fc.weight[:, : y.shape[1]], self.fc.bias)

    def _path(self, stage: int, depth: int) -> list[_ElasticBasicBlock]:
        """The first `depth` blocks of `stage`."""
        blocks = self.stages[stage]
        assert isinstance(blocks, nn.ModuleList)
        return [b for b in blocks[:depth] if isinstance(b, _ElasticBasicBlock)]

    # -- extraction ---------------------------------------------------------------------------------

    def inherit_(self, net: nn.Module, spec: ArchSpec) -> ResNetSupernet:
        """Warm start: copy a trained network of `spec` (a zoo CIFAR ResNet of that shape, e.g. the zoo's
        ResNet-20 for depths (3,3,3), widths (1,1,1)) into the leading slices of the shared weights, so the
        supernet starts from a trained path (the inverse of `extract`; `extract(spec)` then returns it)."""
        spec = self.space.validate(spec)
        feats = list(net.features)  # type: ignore[arg-type]
        expected = 1 + sum(spec["depths"])
        if len(feats) != expected or not isinstance(feats[0], ConvBNAct):
            raise ConfigError(f"inherit_: the network has {len(feats)} feature modules, {spec} needs {expected} "
                              "(stem + one BasicBlock per layer)")
        self.stem.load_from_(feats[0])
        sources = iter(feats[1:])
        for s, depth in enumerate(spec["depths"]):
            for block in self._path(s, depth):
                block.load_from_(next(sources))
        fc = net.fc
        with torch.no_grad():
            self.fc.weight[:, : fc.in_features].copy_(fc.weight)  # type: ignore[union-attr]
            self.fc.bias.copy_(fc.bias)  # type: ignore[union-attr]
        return self

    def extract(self, spec: ArchSpec | None = None) -> nn.Module:
        """The zoo `resnet_cifar` network of `spec` (default: the active one) with the shared weights copied
        in, in the supernet's training mode."""
        spec = self.space.validate(spec) if spec is not None else self._active()
        net = models.build(self.space.model_spec(spec, num_classes=self.num_classes,
                                                 input_shape=self.input_shape))
        feats = list(net.features)  # type: ignore[arg-type]  # a zoo Classifier
        assert isinstance(feats[0], ConvBNAct)
        self.stem.copy_to(feats[0])
        targets = iter(feats[1:])
        for s, depth in enumerate(spec["depths"]):
            for block in self._path(s, depth):
                block.copy_to(next(targets))
        fc = net.fc
        assert isinstance(fc, nn.Linear)
        with torch.no_grad():
            fc.weight.copy_(self.fc.weight[:, : fc.in_features])
            fc.bias.copy_(self.fc.bias)
        return net.train(self.training)
