"""The MBConv layer-wise space (MobileNetV2 layout, FBNet/ProxylessNAS-style choices): per searchable layer a
kernel 3/5/7 × expansion 3/6 inverted residual or skip, plus one width multiplier per stage; registered as
`mbconv` (32×32 images) and `mbconv_kws` (1×49×10 audio features), with the static network builder."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from devicefit.core import ArchSpec, ConfigError, UnsupportedOpError
from devicefit.nn import ConvBNAct, InvertedResidual, make_divisible

from ._base import register_space
from ._checks import check_image_shape, check_int
from ._positional import PositionalSpace

__all__ = ["MBCONV_OPS", "WIDTH_CHOICES", "MBConvNet", "MBConvSpace", "MBConvStage", "op_params"]

MBCONV_OPS: tuple[str, ...] = ("k3_e3", "k3_e6", "k5_e3", "k5_e6", "k7_e3", "k7_e6", "skip")
WIDTH_CHOICES: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5)
ACT = "relu6"


def op_params(op: str) -> tuple[int, int] | None:
    """(kernel, expansion) of an op name, None for `skip`."""
    if op == "skip":
        return None
    k, e = op.split("_")
    return int(k[1:]), int(e[1:])


@dataclass(frozen=True)
class MBConvStage:
    """`repeats` searchable layers to `channels` × the stage's width multiplier; the first has `stride`
    (1 or 2) and cannot be skipped (it changes the shape)."""

    channels: int
    repeats: int
    stride: int


class MBConvSpace(PositionalSpace):
    """A MobileNetV2-layout space: stem 3×3 conv (`stem_channels`), the searchable stages, a 1×1 conv to
    `head_channels`, global average pool and a linear classifier.

    A spec is `ArchSpec(name, {"ops": (one of MBCONV_OPS per layer), "widths": (one of WIDTH_CHOICES per
    stage)})`; the first layer of every stage takes no `skip`. Positions are the layers then the stages:
    `choices()`, `values(spec)` and `from_values(values)` give that positional view (used by strategies
    that shrink the space). Stage channels are `make_divisible(channels · width)`.
    """

    stages: ClassVar[tuple[MBConvStage, ...]]
    input_shape: ClassVar[tuple[int, int, int]]
    stem_channels: ClassVar[int] = 16
    head_channels: ClassVar[int] = 256

    # -- positional view ----------------------------------------------------------------------------

    @property
    def n_layers(self) -> int:
        return sum(st.repeats for st in self.stages)

    def layer_stage(self) -> tuple[tuple[int, bool], ...]:
        """(stage index, is first layer of its stage) per searchable layer."""
        return tuple((s, i == 0) for s, st in enumerate(self.stages) for i in range(st.repeats))

    def choices(self) -> tuple[tuple[Any, ...], ...]:
        ops = tuple(tuple(o for o in MBCONV_OPS if not (first and o == "skip")) for _, first in self.layer_stage())
        return ops + tuple(WIDTH_CHOICES for _ in self.stages)

    def values(self, spec: ArchSpec) -> tuple[Any, ...]:
        spec = self.validate(spec)
        return tuple(spec["ops"]) + tuple(spec["widths"])

    def from_values(self, values: Sequence[Any]) -> ArchSpec:
        values = tuple(values)
        return self.validate(ArchSpec(self.name, {"ops": values[: self.n_layers], "widths": values[self.n_layers:]}))

    def stage_channels(self, spec: ArchSpec) -> tuple[int, ...]:
        return tuple(make_divisible(st.channels * w) for st, w in zip(self.stages, spec["widths"], strict=True))

    # -- Space contract -----------------------------------------------------------------------------

    def validate(self, spec: ArchSpec) -> ArchSpec:
        self._check_params(spec, ("ops", "widths"))
        ops, widths = tuple(spec.get("ops") or ()), tuple(spec.get("widths") or ())
        if len(ops) != self.n_layers or len(widths) != len(self.stages):
            raise ConfigError(f"{self.name} spec needs {self.n_layers} ops and {len(self.stages)} widths, "
                              f"got {len(ops)} ops and {len(widths)} widths")
        for pos, (value, allowed) in enumerate(zip(ops + widths, self.choices(), strict=True)):
            if value not in allowed:
                what = f"layer {pos}" if pos < self.n_layers else f"stage {pos - self.n_layers} width"
                raise ConfigError(f"{self.name}: {what} is {value!r}, expected one of {list(allowed)}")
        return ArchSpec(self.name, {"ops": ops, "widths": tuple(float(w) for w in widths)})

    def enumerate(self) -> Iterator[ArchSpec]:
        raise UnsupportedOpError(f"{self.name} has {self.size:.3g} architectures, too many to enumerate; "
                                 "sample() instead")

    def build(self, spec: ArchSpec, **kwargs: Any) -> nn.Module:
        """`MBConvNet` for `spec`: kwargs `num_classes` (10), `input_shape` (the space's)."""
        return MBConvNet(self, self.validate(spec), **kwargs)

    def supernet(self, *, num_classes: int = 10, input_shape: Sequence[int] | None = None,
                 weight_sharing: str = "ofa") -> nn.Module:
        """The weight-sharing `MBConvSupernet` of this space (`weight_sharing`: "ofa" or "per_op")."""
        from ._supernet import MBConvSupernet  # the supernet module imports this one

        return MBConvSupernet(self, num_classes=num_classes, input_shape=input_shape,
                              weight_sharing=weight_sharing)

    def smallest(self) -> ArchSpec:
        """The architecture with every skippable layer skipped, the others k3_e3, every width the smallest."""
        ops = tuple("k3_e3" if first else "skip" for _, first in self.layer_stage())
        return ArchSpec(self.name, {"ops": ops, "widths": tuple(WIDTH_CHOICES[0] for _ in self.stages)})

    def largest(self) -> ArchSpec:
        """Every layer k7_e6 at the widest width of every stage (the supernet's shape)."""
        return ArchSpec(self.name, {"ops": tuple("k7_e6" for _ in range(self.n_layers)),
                                    "widths": tuple(WIDTH_CHOICES[-1] for _ in self.stages)})

    def analytic_cost(self, spec: ArchSpec, *, num_classes: int = 10,
                      input_shape: Sequence[int] | None = None) -> dict[str, int]:
        """{params, macs, param_bytes_int8, peak_activation_bytes_int8} of `spec`'s network at batch 1: params
        and MACs from the exact cost tables, the int8 peak activation from `nn.analyze` of the built network
        (a few ms; callers cache)."""
        from devicefit.nn import analyze

        from ._mbconv_cost import mbconv_cost  # that module imports this one

        shape = tuple(input_shape or self.input_shape)
        params = int(mbconv_cost(self, spec, metric="params", num_classes=num_classes, input_shape=shape))
        macs = int(mbconv_cost(self, spec, metric="macs", num_classes=num_classes, input_shape=shape))
        report = analyze(self.build(spec, num_classes=num_classes, input_shape=shape), shape)
        return {"params": params, "macs": macs, "param_bytes_int8": report.param_bytes,
                "peak_activation_bytes_int8": report.peak_activation_bytes}


class MBConvNet(nn.Module):
    """The static network of one MBConv spec (plain `ConvBNAct` / `InvertedResidual` modules, no search code);
    (B, *input_shape) → (B, num_classes). Skipped layers are absent."""

    def __init__(self, space: MBConvSpace, spec: ArchSpec, *, num_classes: int = 10,
                 input_shape: Sequence[int] | None = None) -> None:
        super().__init__()
        check_int("num_classes", num_classes, 1)
        shape = check_image_shape(tuple(input_shape or space.input_shape), 4, space.name)
        widths = space.stage_channels(spec)
        layers: list[nn.Module] = [ConvBNAct(shape[0], space.stem_channels, 3, 1, act=ACT)]
        c_in = space.stem_channels
        for (stage, first), op in zip(space.layer_stage(), spec["ops"], strict=True):
            params = op_params(op)
            if params is None:
                continue
            stride = space.stages[stage].stride if first else 1
            layers.append(InvertedResidual(c_in, widths[stage], stride, expand_ratio=params[1],
                                           kernel_size=params[0], act=ACT))
            c_in = widths[stage]
        layers.append(ConvBNAct(c_in, space.head_channels, 1, act=ACT))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(space.head_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.features(x))))  # (B, num_classes)


@register_space
class MBConvCifarSpace(MBConvSpace):
    """MobileNetV2 stages at half width for 32×32 images (CIFAR strides: stem 1, total stride 8); 16 layers."""

    name: ClassVar[str] = "mbconv"
    input_shape: ClassVar[tuple[int, int, int]] = (3, 32, 32)
    stages: ClassVar[tuple[MBConvStage, ...]] = (
        MBConvStage(16, 2, 1), MBConvStage(16, 3, 2), MBConvStage(32, 4, 2), MBConvStage(48, 3, 1),
        MBConvStage(80, 3, 2), MBConvStage(160, 1, 1),
    )


@register_space
class MBConvKWSSpace(MBConvSpace):
    """A narrower layout for 1×49×10 MFCC features (keyword spotting): two stride-2 stages (49×10 → 13×3),
    12 layers."""

    name: ClassVar[str] = "mbconv_kws"
    input_shape: ClassVar[tuple[int, int, int]] = (1, 49, 10)
    stages: ClassVar[tuple[MBConvStage, ...]] = (
        MBConvStage(16, 2, 1), MBConvStage(24, 3, 2), MBConvStage(32, 3, 2), MBConvStage(48, 3, 1),
        MBConvStage(64, 1, 1),
    )
