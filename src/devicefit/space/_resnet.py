"""The `resnet_cifar` space: per stage a depth (1–4 basic blocks) and a width multiplier on 16/32/64 channels,
ResNet-20 at its centre; its networks are the zoo's `resnet_cifar` models. Also the analytic cost of a spec
(parameters, MACs, int8 weight bytes and peak activation bytes, equal to `models.cost` without building)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from torch import nn

from devicefit import models
from devicefit.core import ArchSpec, ConfigError
from devicefit.nn import make_divisible

from ._base import register_space
from ._checks import check_image_shape, check_int
from ._positional import PositionalSpace

if TYPE_CHECKING:
    from ._resnet_supernet import ResNetSupernet

__all__ = ["DEPTH_CHOICES", "RESNET_WIDTHS", "ResNetSpace", "resnet_cost"]

DEPTH_CHOICES: tuple[int, ...] = (1, 2, 3, 4)
RESNET_WIDTHS: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
MODEL_FAMILY = "resnet_cifar"
DEFAULT_INPUT_SHAPE = (3, 32, 32)


@register_space
class ResNetSpace(PositionalSpace):
    """CIFAR ResNets: stem 3×3 conv, three stages of basic blocks (stride 1, 2, 2), pool, linear.

    A spec is `ArchSpec("resnet_cifar", {"depths": (d0, d1, d2), "widths": (w0, w1, w2)})` with each depth in
    `DEPTH_CHOICES` and each width in `RESNET_WIDTHS`; stage channels are `make_divisible(stages[s] · w_s, 8)`
    and the stem has stage 0's channels. Positions are the stages' depths then the stages' widths
    (`choices()`, `values(spec)`, `from_values(values)`), the widths last as `search.scale_channels` needs.
    ResNet-20 is depths (3, 3, 3), widths (1, 1, 1). `size` = 4³ · 7³ = 21952.
    """

    name: ClassVar[str] = "resnet_cifar"
    stages: ClassVar[tuple[int, ...]] = (16, 32, 64)  # base output channels per stage (width 1.0)
    input_shape: ClassVar[tuple[int, int, int]] = DEFAULT_INPUT_SHAPE

    # -- positional view ----------------------------------------------------------------------------

    def choices(self) -> tuple[tuple[Any, ...], ...]:
        """Per position its allowed values: one depth position per stage, then one width position per stage."""
        return tuple(DEPTH_CHOICES for _ in self.stages) + tuple(RESNET_WIDTHS for _ in self.stages)

    def values(self, spec: ArchSpec) -> tuple[Any, ...]:
        spec = self.validate(spec)
        return tuple(spec["depths"]) + tuple(spec["widths"])

    def from_values(self, values: Sequence[Any]) -> ArchSpec:
        values, n = tuple(values), len(self.stages)
        return self.validate(ArchSpec(self.name, {"depths": values[:n], "widths": values[n:]}))

    def stage_channels(self, spec: ArchSpec) -> tuple[int, ...]:
        """Output channels per stage of a (valid) spec."""
        return tuple(make_divisible(c * w) for c, w in zip(self.stages, spec["widths"], strict=True))

    def smallest(self) -> ArchSpec:
        """One block per stage at the narrowest width."""
        return self._uniform(DEPTH_CHOICES[0], RESNET_WIDTHS[0])

    def largest(self) -> ArchSpec:
        """Four blocks per stage at the widest width (the supernet's shape)."""
        return self._uniform(DEPTH_CHOICES[-1], RESNET_WIDTHS[-1])

    def resnet20(self) -> ArchSpec:
        """ResNet-20: three blocks per stage at width 1."""
        return self._uniform(3, 1.0)

    def _uniform(self, depth: int, width: float) -> ArchSpec:
        n = len(self.stages)
        return ArchSpec(self.name, {"depths": (depth,) * n, "widths": (float(width),) * n})

    # -- Space contract -----------------------------------------------------------------------------

    def validate(self, spec: ArchSpec) -> ArchSpec:
        """The canonical spec (int depths, float widths) or ConfigError naming the stage and the value."""
        self._check_params(spec, ("depths", "widths"))
        n = len(self.stages)
        depths, widths = _as_tuple(spec.get("depths")), _as_tuple(spec.get("widths"))
        if len(depths) != n or len(widths) != n:
            raise ConfigError(f"{self.name} spec needs {n} depths and {n} widths, "
                              f"got {len(depths)} depths and {len(widths)} widths")
        for s, d in enumerate(depths):
            if isinstance(d, bool) or not isinstance(d, int | float) or d not in DEPTH_CHOICES:
                raise ConfigError(f"{self.name}: stage {s} depth is {d!r}, expected one of {list(DEPTH_CHOICES)}")
        for s, w in enumerate(widths):
            if isinstance(w, bool) or not isinstance(w, int | float) or w not in RESNET_WIDTHS:
                raise ConfigError(f"{self.name}: stage {s} width is {w!r}, expected one of {list(RESNET_WIDTHS)}")
        return ArchSpec(self.name, {"depths": tuple(int(d) for d in depths), "widths": tuple(float(w) for w in widths)})

    def enumerate(self) -> Iterator[ArchSpec]:
        """Every architecture once, position 0 (stage 0 depth) slowest."""
        n = len(self.stages)
        for values in itertools.product(*self.choices()):
            yield ArchSpec(self.name, {"depths": values[:n], "widths": tuple(float(w) for w in values[n:])})

    def model_spec(self, spec: ArchSpec, *, num_classes: int = 10,
                   input_shape: Sequence[int] = DEFAULT_INPUT_SHAPE) -> ArchSpec:
        """The complete zoo spec (family `resnet_cifar`, every parameter explicit) of `spec`'s network."""
        spec = self.validate(spec)
        return models.default_spec(MODEL_FAMILY, num_classes=num_classes, input_shape=tuple(input_shape),
                                   depths=spec["depths"], channels=self.stage_channels(spec))

    def from_model_spec(self, model_spec: ArchSpec) -> ArchSpec | None:
        """The space's spec of a zoo CIFAR ResNet (`resnet8`, `resnet20`, `resnet_cifar`) when its network is a
        member of this space (same depths, stage channels reachable by a width choice, ReLU), else None."""
        p = model_spec.as_kwargs()
        if p.get("act", "relu") != "relu":
            return None
        wm = float(p.get("width_mult", 1.0))
        fixed = {"resnet8": (1, 1, 1), "resnet20": (3, 3, 3)}
        if model_spec.family in fixed:
            depths, channels = fixed[model_spec.family], tuple(make_divisible(c * wm) for c in self.stages)
        elif model_spec.family == MODEL_FAMILY and wm == 1.0:
            depths, channels = tuple(p["depths"]), tuple(p["channels"])
        else:
            return None
        widths = []
        for base, c in zip(self.stages, channels, strict=False):
            fits = [w for w in RESNET_WIDTHS if make_divisible(base * w) == c]
            if not fits:
                return None
            widths.append(min(fits, key=lambda w: abs(w - c / base)))  # several widths can round alike
        candidate = ArchSpec(self.name, {"depths": depths, "widths": tuple(widths)})
        return self.validate(candidate) if self.contains(candidate) else None

    def build(self, spec: ArchSpec, **kwargs: Any) -> nn.Module:
        """`models.build(model_spec(spec, **kwargs))`: kwargs `num_classes` (10), `input_shape` ((3, 32, 32))."""
        return models.build(self.model_spec(spec, **kwargs))

    def analytic_cost(self, spec: ArchSpec, *, num_classes: int = 10,
                      input_shape: Sequence[int] = DEFAULT_INPUT_SHAPE) -> dict[str, int]:
        """`resnet_cost(self, spec, ...)`."""
        return resnet_cost(self, spec, num_classes=num_classes, input_shape=input_shape)

    def supernet(self, *, num_classes: int = 10, input_shape: Sequence[int] | None = None) -> ResNetSupernet:
        """A fresh weight-sharing `ResNetSupernet` of this space."""
        from ._resnet_supernet import ResNetSupernet  # the supernet module imports this one

        return ResNetSupernet(self, num_classes=num_classes, input_shape=input_shape)


def _as_tuple(value: Any) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, Sequence) and not isinstance(value, str) else ()


# -- analytic cost ----------------------------------------------------------------------------------------


class _Graph:
    """The execution-order node list `nn.analyze` sees for a resnet_cifar model, and its liveness rules:
    nodes are (kind, output bytes at int8, input node ids); kinds as `nn._cost` classes them."""

    def __init__(self) -> None:
        self.nodes: list[tuple[str, int, tuple[int, ...]]] = []

    def add(self, kind: str, nbytes: int, *inputs: int) -> int:
        self.nodes.append((kind, nbytes, inputs))
        return len(self.nodes) - 1

    def conv_bn(self, x: int, nbytes: int, relu: bool) -> int:
        y = self.add("unary", nbytes, self.add("compute", nbytes, x))  # conv, BN
        return self.add("unary" if relu else "alias", nbytes, y)  # ReLU or Identity

    def peak_bytes(self) -> int:
        """Peak of simultaneously live buffers, by the rules of `devicefit.nn.analyze`."""
        n = len(self.nodes) + 1  # + the output node, which reads the last one
        last = list(range(n - 1))
        for i, (_, _, inputs) in enumerate(self.nodes):
            for j in inputs:
                last[j] = max(last[j], i)
        last[-1] = n - 1
        bufs: list[list[int]] = []  # [start, end, nbytes]
        of: dict[int, int] = {}
        for i, (kind, nbytes, inputs) in enumerate(self.nodes):
            reuse = None
            if kind == "alias" or (kind == "unary" and bufs[of[inputs[0]]][1] == i):  # alias, in-place
                reuse = of[inputs[0]]
            elif kind == "elementwise":  # into a dying operand of the output's size
                reuse = next((of[j] for j in inputs if bufs[of[j]][1] == i and bufs[of[j]][2] == nbytes), None)
            if reuse is None:
                bufs.append([i, last[i], nbytes])
                of[i] = len(bufs) - 1
            else:
                of[i] = reuse
                bufs[reuse][1] = max(bufs[reuse][1], last[i])
        live = np.zeros(n + 1, dtype=np.int64)
        for start, end, nbytes in bufs:
            live[start] += nbytes
            live[end + 1] -= nbytes
        return int(np.cumsum(live).max())


def resnet_cost(space: ResNetSpace, spec: ArchSpec, *, num_classes: int = 10,
                input_shape: Sequence[int] = DEFAULT_INPUT_SHAPE) -> dict[str, int]:
    """{params, macs, param_bytes_int8, peak_activation_bytes_int8} of `spec`'s network at batch 1, equal to
    `models.cost(space.model_spec(spec, ...), weight_bits=8, act_bits=8)` (params count BN weight and bias,
    not its running statistics), computed without building the network (≈ 0.1 ms)."""
    spec = space.validate(spec)
    check_int("num_classes", num_classes, 1)
    c_in, h, w = check_image_shape(tuple(input_shape), 2 ** (len(space.stages) - 1), space.name)
    chans = space.stage_channels(spec)
    g = _Graph()
    x = g.add("input", c_in * h * w)
    c = chans[0]
    params, macs = 9 * c_in * c + 2 * c, 9 * c_in * c * h * w
    x = g.conv_bn(x, c * h * w, relu=True)
    for stage, (depth, out) in enumerate(zip(spec["depths"], chans, strict=True)):
        for i in range(depth):
            stride = 2 if stage > 0 and i == 0 else 1
            h, w = -(-h // stride), -(-w // stride)
            hw = h * w
            params += 9 * c * out + 9 * out * out + 4 * out
            macs += (9 * c * out + 9 * out * out) * hw
            short = x
            if stride != 1 or c != out:
                params += c * out + 2 * out
                macs += c * out * hw
                short = g.conv_bn(x, out * hw, relu=False)
            y = g.conv_bn(g.conv_bn(x, out * hw, relu=True), out * hw, relu=False)
            x = g.add("unary", out * hw, g.add("elementwise", out * hw, y, short))
            c = out
    g.add("compute", num_classes, g.add("alias", c, g.add("compute", c, x)))  # pool, flatten, fc
    params += c * num_classes + num_classes
    macs += c * num_classes
    return {"params": params, "macs": macs, "param_bytes_int8": params,
            "peak_activation_bytes_int8": g.peak_bytes()}
