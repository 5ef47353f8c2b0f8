"""Update schemes for on-device learning: which weights, channels and biases of a deployed network train.

A scheme (registered in `SCHEMES`) turns a `SchemeConfig` and the network's weight layers into an
`UpdatePlan`; `prepare` applies a plan to a copy of the network (freezing the rest and, when lean,
swapping in the memory-lean ops of `_ondevice_ops`), and `restore` gives back a stock network with the
learned values, loadable into the original architecture.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from devicefit.core import ConfigError, Registry, check_choice, check_range

from ._ondevice_ops import FoldedBN, FrozenConv2d, FrozenStatsBN, MaskReLU, SparseConv2d

__all__ = ["SCHEMES", "SchemeConfig", "UpdatePlan", "WeightLayer", "plan_updates", "prepare", "register_scheme",
           "restore", "weight_layers"]


@dataclass(frozen=True)
class WeightLayer:
    """A Conv2d or Linear in module order, with the BatchNorm2d that directly follows it (if any)."""

    index: int
    name: str
    bn_name: str | None
    out_channels: int


@dataclass(frozen=True)
class UpdatePlan:
    """weights: layer index → fraction of output channels whose weights train (1.0 = all; a Linear
    always trains whole);
    biases: layers whose bias (their own or their BN's shift) trains; bn_affine: layers whose BN trains
    γ and β as a stock BatchNorm2d (normalising with the running statistics or with batch statistics, as
    `SchemeConfig.bn_stats` says; the other BNs sit at running statistics, folded when lean)."""

    weights: dict[int, float] = field(default_factory=dict)
    biases: frozenset[int] = frozenset()
    bn_affine: frozenset[int] = frozenset()


@dataclass(frozen=True)
class SchemeConfig:
    """An update scheme by name with its settings.

    last_k: layers counted from the end for "last-k". layers / channel_ratio: weight layers (indices into
    `weight_layers`, negative from the end) and the fraction of their output channels updated, for
    "sparse"; layer_ratios (same length as layers) gives each its own fraction instead. bias_layers: how
    many last layers train their biases ("sparse"; -1 = all). lean: use the
    memory-lean ops (mask activations, frozen conv saving nothing, folded BN); None = the scheme's
    default (off for "full" and "last-k", which show stock PyTorch). mask_bits: 1 or 8.
    bn_stats: how a BatchNorm whose γ/β train ("full", "last-k") normalises during adaptation: "batch"
    (default; stock train-mode BN: batch statistics, running statistics re-estimated on the new data) or
    "running" (eval-mode BN at the frozen running statistics, as TinyTL and MCUNetV3 adapt). Measured in
    `benchmarks/ondevice.py` (batch 8, SGD momentum 0.9): "running" made full fine-tuning diverge at
    lr 0.01 on both scenarios (no normalisation left to absorb the weights' scale); at lr 0.001 it scored
    2.6 points above "batch" on the CIFAR shift and 1 point below on FSDD, which is why "batch" is the
    default. The lean schemes fold every BN at running statistics.
    """

    name: str = "bias"
    last_k: int = 1
    layers: tuple[int, ...] = ()
    channel_ratio: float = 1.0
    layer_ratios: tuple[float, ...] = ()
    bias_layers: int = -1
    lean: bool | None = None
    mask_bits: int = 1
    bn_stats: str = "batch"

    def __post_init__(self) -> None:
        SCHEMES.get(self.name)  # raises naming the known schemes
        check_choice("bn_stats", self.bn_stats, BN_STATS)
        if not isinstance(self.last_k, int) or self.last_k < 1:
            raise ConfigError(f"last_k must be an int >= 1, got {self.last_k!r}")
        for ratio in (self.channel_ratio, *self.layer_ratios):
            check_range("channel_ratio", ratio, 0.0, 1.0, inclusive=True)
            if ratio == 0:
                raise ConfigError("channel_ratio and layer_ratios must be > 0, got 0")
        if self.layer_ratios and len(self.layer_ratios) != len(self.layers):
            raise ConfigError(f"layer_ratios must give one ratio per entry of layers ({len(self.layers)}), "
                              f"got {len(self.layer_ratios)}")
        if not isinstance(self.bias_layers, int) or self.bias_layers < -1:
            raise ConfigError(f"bias_layers must be an int >= -1 (-1 = all), got {self.bias_layers!r}")
        if self.mask_bits not in (1, 8):
            raise ConfigError(f"mask_bits must be 1 or 8, got {self.mask_bits!r}")
        object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))
        object.__setattr__(self, "layer_ratios", tuple(float(r) for r in self.layer_ratios))


BN_STATS = ("running", "batch")
SchemeFn = Callable[[SchemeConfig, list[WeightLayer]], UpdatePlan]
Transform = Callable[[nn.Module, SchemeConfig], None]


@dataclass(frozen=True)
class _Scheme:
    plan: SchemeFn
    lean: bool  # use the memory-lean ops unless the config says otherwise
    transform: Transform | None  # a structural change applied last (e.g. TinyTL's lite residuals)


SCHEMES: Registry[_Scheme] = Registry("update scheme")


def register_scheme(name: str, *, lean: bool, transform: Transform | None = None) -> Callable[[SchemeFn], SchemeFn]:
    """Decorator registering `fn(cfg, layers) -> UpdatePlan` as scheme `name`, lean by default or not;
    `transform(net, cfg)`, if given, changes the prepared copy's structure in place after the plan is
    applied (new modules it adds decide their own `requires_grad`)."""

    def deco(fn: SchemeFn) -> SchemeFn:
        SCHEMES.add(name, _Scheme(fn, lean, transform))
        return fn

    return deco


def weight_layers(model: nn.Module) -> list[WeightLayer]:
    """Every Conv2d and Linear of `model` in module order, paired with a BatchNorm2d that follows it
    directly (next in `named_modules`, same channel count)."""
    mods = list(model.named_modules())
    out: list[WeightLayer] = []
    for i, (name, m) in enumerate(mods):
        if isinstance(m, nn.Conv2d | nn.Linear):
            nxt = mods[i + 1] if i + 1 < len(mods) else None
            channels = m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
            bn = nxt[0] if nxt and isinstance(nxt[1], nn.BatchNorm2d) and nxt[1].num_features == channels else None
            out.append(WeightLayer(len(out), name, bn, channels))
    return out


def _last(n: int, count: int) -> range:
    return range(max(count - n, 0), count)


@register_scheme("full", lean=False)
def _full(cfg: SchemeConfig, layers: list[WeightLayer]) -> UpdatePlan:
    every = frozenset(range(len(layers)))
    return UpdatePlan({i: 1.0 for i in every}, every, every)  # BN affine too


@register_scheme("last-k", lean=False)
def _last_k(cfg: SchemeConfig, layers: list[WeightLayer]) -> UpdatePlan:
    chosen = frozenset(_last(cfg.last_k, len(layers)))
    return UpdatePlan({i: 1.0 for i in chosen}, chosen, chosen)


@register_scheme("bias", lean=True)
def _bias(cfg: SchemeConfig, layers: list[WeightLayer]) -> UpdatePlan:
    """Every bias plus the classifier (the last layer's weights), as TinyTL fine-tunes the head too."""
    return UpdatePlan({len(layers) - 1: 1.0}, frozenset(range(len(layers))))


@register_scheme("sparse", lean=True)
def _sparse(cfg: SchemeConfig, layers: list[WeightLayer]) -> UpdatePlan:
    n = len(layers)
    bad = [i for i in cfg.layers if not -n <= i < n]
    if bad:
        raise ConfigError(f"sparse layers must be indices in [{-n}, {n}) of the {n} weight layers, got {bad}")
    n_bias = n if cfg.bias_layers == -1 else cfg.bias_layers
    ratios = cfg.layer_ratios or (cfg.channel_ratio,) * len(cfg.layers)
    return UpdatePlan({i % n: r for i, r in zip(cfg.layers, ratios, strict=True)}, frozenset(_last(n_bias, n)))


def plan_updates(model: nn.Module, cfg: SchemeConfig) -> UpdatePlan:
    """The plan scheme `cfg.name` makes for `model`."""
    return SCHEMES.get(cfg.name).plan(cfg, weight_layers(model))


def _set(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, new)


def _top_channels(conv: nn.Conv2d, ratio: float) -> list[int]:
    """The ⌈ratio·C⌉ output channels with the largest weight L2 norm (MCUNetV3 updates the salient ones)."""
    k = max(1, round(ratio * conv.out_channels))
    norms = conv.weight.detach().flatten(1).norm(dim=1)
    return sorted(norms.argsort(descending=True)[:k].tolist())


def _apply_layer(net: nn.Module, layer: WeightLayer, plan: UpdatePlan, lean: bool, bn_stats: str) -> None:
    mod = net.get_submodule(layer.name)
    ratio = plan.weights.get(layer.index, 0.0)
    trains_bias = layer.index in plan.biases
    if mod.bias is not None:
        mod.bias.requires_grad_(trains_bias)
    if ratio >= 1.0 or (ratio > 0 and isinstance(mod, nn.Linear)):  # a Linear (the head) trains whole
        mod.weight.requires_grad_(True)
    elif ratio > 0:
        _set(net, layer.name, SparseConv2d(mod, _top_channels(mod, ratio)))
    elif lean and isinstance(mod, nn.Conv2d):
        _set(net, layer.name, FrozenConv2d(mod))
    if layer.bn_name is None:
        return
    bn = net.get_submodule(layer.bn_name)
    if layer.index in plan.bn_affine:
        if bn.affine:
            bn.weight.requires_grad_(True)
            bn.bias.requires_grad_(True)
        if bn_stats == "running":
            _set(net, layer.bn_name, FrozenStatsBN(bn))
    elif lean:
        _set(net, layer.bn_name, FoldedBN(bn, train_shift=trains_bias))
    else:
        bn.bias.requires_grad_(trains_bias)
        _set(net, layer.bn_name, FrozenStatsBN(bn))


def prepare(model: nn.Module, cfg: SchemeConfig) -> nn.Module:
    """A copy of `model` ready to train under scheme `cfg` (the original is not touched): parameters
    outside the plan frozen, BatchNorms at running statistics (those whose γ/β train too when
    `cfg.bn_stats` is "running"), and with `cfg.lean` (or the
    scheme's default) the memory-lean ops swapped in. Raises `ConfigError` for a bad plan."""
    scheme = SCHEMES.get(cfg.name)
    lean = scheme.lean if cfg.lean is None else cfg.lean
    net = copy.deepcopy(model)
    plan = plan_updates(net, cfg)
    for p in net.parameters():
        p.requires_grad_(False)
    for layer in weight_layers(net):
        _apply_layer(net, layer, plan, lean, cfg.bn_stats)
    if lean:
        for name, m in list(net.named_modules()):
            if type(m) in (nn.ReLU, nn.ReLU6):
                _set(net, name, MaskReLU(6.0 if isinstance(m, nn.ReLU6) else None, cfg.mask_bits))
    if scheme.transform is not None:
        scheme.transform(net, cfg)
    return net


def restore(prepared: nn.Module) -> nn.Module:
    """A stock copy of a `prepare`d network with the learned values written back (same state-dict keys
    as the network `prepare` was given, unless a scheme added modules, as "tinytl" does: those stay);
    every parameter requires grad again."""
    net = copy.deepcopy(prepared)
    wrapped = [(n, m) for n, m in net.named_modules() if hasattr(m, "restore") and callable(m.restore)]
    for name, m in sorted(wrapped, key=lambda item: -item[0].count(".")):
        _set(net, name, m.restore())
    for p in net.parameters():
        p.requires_grad_(True)
    return net
