"""The weight-sharing single-path supernet of an MBConv space: channels are sliced for narrower widths (OFA),
`extract(spec)` copies the active slices into the plain `MBConvNet` of that spec.

How a layer's ops share weights (`weight_sharing`):
- "ofa" (default): one block per layer at the largest kernel and expansion; a smaller kernel is the centre of
  the largest, a smaller expansion the first hidden channels (Once-for-All's elastic kernel and expansion).
  Every path trains every layer's shared weights, so uniform single-path training from scratch learns;
- "per_op": one block per op (SPOS / ProxylessNAS). Under uniform single-path training from scratch it does
  not learn: independently initialised ops, each trained only when sampled, hand the next layer features
  that change with every path.
Measured (benchmarks/supernet_sharing.py, 4,500 CIFAR-10 images, 3 epochs, the same paths): "ofa" train loss
2.303 → 2.107, random paths 20-25% validation accuracy; "per_op" 2.320 → 2.306, paths 9-14% (chance 10%).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from devicefit.core import ArchSpec, ConfigError, NotFittedError
from devicefit.nn import ConvBNAct, InvertedResidual, make_divisible

from ._base import _check_rng, get_space
from ._checks import check_image_shape, check_int
from ._mbconv import ACT, MBCONV_OPS, WIDTH_CHOICES, MBConvNet, MBConvSpace, op_params

__all__ = ["WEIGHT_SHARING", "ElasticConvBN", "MBConvSupernet", "SinglePathSupernet"]

WEIGHT_SHARING = ("ofa", "per_op")


class ElasticConvBN(nn.Module):
    """Conv (no bias) → BN → activation with weights for `max_in` → `max_out` channels; `forward(x, c_out, k)`
    uses the first `c_out` output and the first `x.shape[1]` input channels (depthwise: c_out = C_in) and the
    centre k×k of the kernel (default: all of it). BN running statistics of the used channels are updated in
    place (slices are views of the buffers)."""

    def __init__(self, max_in: int, max_out: int, kernel_size: int, stride: int, *, depthwise: bool = False,
                 act: str = ACT) -> None:
        super().__init__()
        self.conv = nn.Conv2d(max_in, max_out, kernel_size, stride, (kernel_size - 1) // 2,
                              groups=max_in if depthwise else 1, bias=False)
        self.bn = nn.BatchNorm2d(max_out)
        self.act = act
        self.depthwise = depthwise

    def forward(self, x: Tensor, c_out: int, kernel_size: int | None = None) -> Tensor:
        c_in = x.shape[1]
        w = _crop(self.conv.weight[:c_in] if self.depthwise else self.conv.weight[:c_out, :c_in], kernel_size)
        y = F.conv2d(x, w, None, self.conv.stride, (w.shape[-1] - 1) // 2, groups=c_in if self.depthwise else 1)
        bn = self.bn
        y = F.batch_norm(y, bn.running_mean[:c_out], bn.running_var[:c_out],  # type: ignore[index]
                         bn.weight[:c_out], bn.bias[:c_out], self.training, bn.momentum or 0.1, bn.eps)
        return F.relu6(y) if self.act == ACT else y

    def load_from_(self, source: ConvBNAct) -> None:
        """Copy a plain ConvBNAct's weights and BN state into the matching leading slices (inverse of
        `copy_to`; a trained network's weights become the start of the shared ones)."""
        conv, bn = source[0], source[1]
        c_out, c_in = conv.weight.shape[0], conv.in_channels
        with torch.no_grad():
            if self.depthwise:
                self.conv.weight[:c_out].copy_(conv.weight)
            else:
                self.conv.weight[:c_out, :c_in].copy_(conv.weight)
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(self.bn, name)[:c_out].copy_(getattr(bn, name))

    def copy_to(self, target: ConvBNAct) -> None:
        """Copy the slices that `target` (a plain ConvBNAct of the active shape and kernel) needs."""
        conv, bn = target[0], target[1]
        c_out, c_in = conv.weight.shape[0], conv.in_channels
        with torch.no_grad():
            w = self.conv.weight[:c_out] if self.depthwise else self.conv.weight[:c_out, :c_in]
            conv.weight.copy_(_crop(w, conv.weight.shape[-1]))
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(bn, name).copy_(getattr(self.bn, name)[:c_out])
            bn.num_batches_tracked.copy_(self.bn.num_batches_tracked)


def _crop(w: Tensor, kernel_size: int | None) -> Tensor:
    """The centre `kernel_size`² of a (..., K, K) weight (all of it for None or K)."""
    k_max = w.shape[-1]
    if kernel_size is None or kernel_size == k_max:
        return w
    off = (k_max - kernel_size) // 2
    return w[..., off:off + kernel_size, off:off + kernel_size]


class _ElasticMBConv(nn.Module):
    """One block of one layer at its maximal width: expand → depthwise → project, for kernel k and expansion e
    (an op's own block), or for any smaller kernel and expansion given to `forward` (the shared block)."""

    def __init__(self, max_in: int, max_out: int, stride: int, kernel_size: int, expansion: int) -> None:
        super().__init__()
        self.expansion = expansion
        self.expand = ElasticConvBN(max_in, max_in * expansion, 1, 1)
        self.depthwise = ElasticConvBN(max_in * expansion, max_in * expansion, kernel_size, stride, depthwise=True)
        self.project = ElasticConvBN(max_in * expansion, max_out, 1, 1, act="none")

    def forward(self, x: Tensor, c_out: int, kernel_size: int | None = None, expansion: int | None = None
                ) -> Tensor:
        hidden = round(x.shape[1] * (expansion or self.expansion))  # as InvertedResidual
        y = self.depthwise(self.expand(x, hidden), hidden, kernel_size)
        return self.project(y, c_out)

    def copy_to(self, block: InvertedResidual) -> None:
        for mine, theirs in zip((self.expand, self.depthwise, self.project), block.block, strict=True):
            mine.copy_to(theirs)


class _SuperLayer(nn.Module):
    """A searchable layer; skip = identity. "per_op": one `_ElasticMBConv` per non-skip op (`ops`, in
    MBCONV_OPS order); "ofa": one at the largest kernel and expansion (`shared`), sliced per op."""

    def __init__(self, max_in: int, max_out: int, stride: int, allow_skip: bool, sharing: str) -> None:
        super().__init__()
        self.stride, self.allow_skip, self.sharing = stride, allow_skip, sharing
        params = {op: op_params(op) for op in MBCONV_OPS if op != "skip"}
        if sharing == "ofa":
            k, e = max(k for k, _ in params.values()), max(e for _, e in params.values())
            self.shared = _ElasticMBConv(max_in, max_out, stride, k, e)
        else:
            self.ops = nn.ModuleDict({op: _ElasticMBConv(max_in, max_out, stride, *p)  # type: ignore[misc]
                                      for op, p in params.items()})

    def forward(self, x: Tensor, op: str, c_out: int) -> Tensor:
        if op == "skip":
            return x
        y = self.shared(x, c_out, *op_params(op)) if self.sharing == "ofa" else self.ops[op](x, c_out)
        return x + y if self.stride == 1 and x.shape[1] == c_out else y

    def copy_to(self, op: str, block: InvertedResidual) -> None:
        """Copy `op`'s weights (the slices its block uses) into a plain `InvertedResidual`."""
        (self.shared if self.sharing == "ofa" else self.ops[op]).copy_to(block)


class SinglePathSupernet(nn.Module):
    """Path selection shared by the single-path supernets: `space` (set by the subclass), `active_` (the
    spec `forward` runs, None until chosen), `set_active(spec)` (validated), `sample(rng)` (uniform; sets
    and returns it) and `_active()` (NotFittedError while none is chosen)."""

    space: Any
    active_: ArchSpec | None

    def set_active(self, spec: ArchSpec) -> Self:
        self.active_ = self.space.validate(spec)
        return self

    def sample(self, rng: np.random.Generator) -> ArchSpec:
        spec = self.space.sample(_check_rng(rng))
        self.set_active(spec)
        return spec  # type: ignore[no-any-return]

    def _active(self) -> ArchSpec:
        if self.active_ is None:
            raise NotFittedError(f"{type(self).__name__} has no active path; call set_active(spec) or "
                                 "sample(rng) first")
        return self.active_


class MBConvSupernet(SinglePathSupernet):
    """Single-path supernet of an `MBConvSpace` (default "mbconv"); (B, *input_shape) → (B, num_classes).

    `set_active(spec)` picks the path `forward` runs; `sample(rng)` draws a uniform spec, activates and
    returns it; `extract(spec=None)` returns a fresh `MBConvNet` (no supernet code) holding copies of the
    shared weights, whose outputs equal the supernet's on that path (same mode, eval for BN statistics).
    `forward_weighted(x, weights)` runs the path of argmax(weights[layer]) and multiplies each layer's output
    by the weight of its op (1 for a hard straight-through Gumbel sample), so gradients reach the weights'
    logits (LightNAS); widths stay those of the active spec. `weight_sharing`: how a layer's ops share weights
    ("ofa", default, or "per_op"; see the module docstring).
    """

    def __init__(self, space: str | MBConvSpace = "mbconv", *, num_classes: int = 10,
                 input_shape: Sequence[int] | None = None, weight_sharing: str = "ofa") -> None:
        super().__init__()
        if weight_sharing not in WEIGHT_SHARING:
            raise ConfigError(f"weight_sharing must be one of {', '.join(WEIGHT_SHARING)}, got {weight_sharing!r}")
        self.weight_sharing = weight_sharing
        self.space = get_space(space) if isinstance(space, str) else space
        if not isinstance(self.space, MBConvSpace):
            raise ConfigError(f"MBConvSupernet needs an MBConv space, got {self.space.name!r}")
        check_int("num_classes", num_classes, 1)
        self.num_classes = num_classes
        self.input_shape = check_image_shape(tuple(input_shape or self.space.input_shape), 4, self.space.name)
        wide = [max(make_divisible(st.channels * w) for w in WIDTH_CHOICES) for st in self.space.stages]
        self.max_channels = tuple(wide)
        sp = self.space
        self.stem = ConvBNAct(self.input_shape[0], sp.stem_channels, 3, 1, act=ACT)
        layers, c_in = [], sp.stem_channels
        for stage, first in sp.layer_stage():
            stride = sp.stages[stage].stride if first else 1
            layers.append(_SuperLayer(c_in, wide[stage], stride, allow_skip=not first, sharing=weight_sharing))
            c_in = wide[stage]
        self.layers = nn.ModuleList(layers)
        self.head = ElasticConvBN(c_in, sp.head_channels, 1, 1)
        self.fc = nn.Linear(sp.head_channels, num_classes)
        self.active_: ArchSpec | None = None

    # -- forward ------------------------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        spec = self._active()
        return self._run(x, spec["ops"], self.space.stage_channels(spec), None)

    def forward_weighted(self, x: Tensor, weights: Tensor) -> Tensor:
        """`weights` (n_layers, len(MBCONV_OPS)); a layer's disallowed skip column must be 0."""
        spec = self._active()
        if weights.shape != (len(self.layers), len(MBCONV_OPS)):
            raise ConfigError(f"weights must be ({len(self.layers)}, {len(MBCONV_OPS)}), got {tuple(weights.shape)}")
        ops = tuple(MBCONV_OPS[int(i)] for i in weights.argmax(dim=1))
        return self._run(x, ops, self.space.stage_channels(spec), weights)

    def _run(self, x: Tensor, ops: Sequence[str], widths: Sequence[int], weights: Tensor | None) -> Tensor:
        y = self.stem(x)
        for i, ((stage, _), op, layer) in enumerate(zip(self.space.layer_stage(), ops, self.layers, strict=True)):
            if op == "skip" and not layer.allow_skip:
                raise ConfigError(f"layer {i} is the first of its stage and cannot be skipped")
            out = layer(y, op, widths[stage])
            y = out if weights is None else out * weights[i, MBCONV_OPS.index(op)]
        y = self.head(y, self.space.head_channels)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))

    # -- extraction ---------------------------------------------------------------------------------

    def extract(self, spec: ArchSpec | None = None) -> MBConvNet:
        """A plain `MBConvNet` of `spec` (default: the active one) with the shared weights copied in, in the
        supernet's training mode."""
        spec = self.space.validate(spec) if spec is not None else self._active()
        net = MBConvNet(self.space, spec, num_classes=self.num_classes, input_shape=self.input_shape)
        feats = list(net.features)
        _copy_convbn(self.stem, feats[0])
        blocks = iter(feats[1:-1])
        for layer, op in zip(self.layers, spec["ops"], strict=True):
            if op != "skip":
                layer.copy_to(op, next(blocks))
        self.head.copy_to(feats[-1])
        with torch.no_grad():
            net.fc.weight.copy_(self.fc.weight)
            net.fc.bias.copy_(self.fc.bias)
        return net.train(self.training)


def _copy_convbn(src: ConvBNAct, dst: ConvBNAct) -> None:
    dst.load_state_dict(src.state_dict())
