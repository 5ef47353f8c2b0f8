"""Structured channel pruning with physical removal, on Torch-Pruning's dependency graph (DepGraph, Fang et al.,
CVPR 2023): coupled channels (residual adds, depthwise groups, concatenation, the classifier input) are removed
together, importance criteria are registered, counts are rounded to a multiple the runtime likes."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from devicefit.core import ConfigError, UnsupportedOpError, check_choice, check_range
from devicefit.nn import analyze

from ._registry import IMPORTANCES, PRUNERS

__all__ = ["PruneConfig", "PruneResult", "StructuredPruner", "classifier_layers", "make_importance",
           "one_group_channels", "prunable_layers", "unsupported_modules"]

Finetune = Callable[[nn.Module], nn.Module]


def _tp() -> Any:
    try:
        import torch_pruning as tp
    except ImportError as e:  # a declared dependency, but keep the message actionable
        raise UnsupportedOpError("structured pruning needs torch-pruning: pip install 'torch-pruning>=1.6'") from e
    return tp


@IMPORTANCES.register("l1")
def _l1() -> Any:
    return _tp().importance.GroupMagnitudeImportance(p=1)


@IMPORTANCES.register("l2")
def _l2() -> Any:
    return _tp().importance.GroupMagnitudeImportance(p=2)


@IMPORTANCES.register("bn_scale")
def _bn_scale() -> Any:
    return _tp().importance.BNScaleImportance()


@IMPORTANCES.register("taylor")
def _taylor() -> Any:
    return _tp().importance.GroupTaylorImportance()


NEEDS_GRADIENTS = frozenset({"taylor"})


def make_importance(name: str) -> Any:
    """A Torch-Pruning importance object for the registered criterion `name` (unknown → ConfigError)."""
    return IMPORTANCES.get(name)()


@dataclass(frozen=True)
class PruneConfig:
    """Settings of structured pruning.

    ratio: fraction of prunable channels removed, in (0, 1). global_ratio: rank channels across layers
        (one threshold) instead of removing `ratio` of each layer. max_layer_ratio: no layer loses more.
    importance: a name in `IMPORTANCES` ("l1", "l2", "bn_scale", "taylor" — the last needs a labelled batch).
    round_to: kept channel counts are multiples of this. ONNX Runtime's fp32 convolutions on AVX2 run a count
        that is not a multiple of 8 about as slowly as the next multiple, or more slowly (measured by
        `benchmarks/channel_multiple.py`); AVX-512 blocks by 16. "auto": the target's multiple
        (`hardware.channel_multiple`), resolved by the prune job, which knows the target; `StructuredPruner`
        itself needs a number.
    round_floor: a layer whose kept count would fall below `round_to` keeps a multiple of this instead (0: no
        layer goes below `round_to`). With round_to=16 on AVX-512 a floor of 8 lets the narrowest layers halve:
        8 channels ran in 0.59x the time of 16 on the Zen 5 VM and in 0.60x on the Xeon, while 13-15 ran
        slower than 16 (`benchmarks/channel_multiple.py`); without a floor a 16-channel layer cannot be
        pruned at all. "auto" round_to sets it from the target too (`hardware.channel_floor`) unless given.
    steps: the ratio is reached in this many equal steps, with `finetune` after each when given.
    on_unsupported: "error" raises `UnsupportedOpError` naming a module whose channels the dependency graph
        cannot follow (a constant-index gather such as ShuffleNet's channel shuffle); "skip" leaves that
        module's layers unpruned, with a warning.
    """

    ratio: float = 0.5
    global_ratio: bool = False
    max_layer_ratio: float = 0.9
    importance: str = "l1"
    round_to: int | str = 8
    round_floor: int = 0
    steps: int = 1
    on_unsupported: str = "error"

    def __post_init__(self) -> None:
        check_choice("on_unsupported", self.on_unsupported, ("error", "skip"))
        check_range("ratio", self.ratio, 0.0, 1.0)
        check_range("max_layer_ratio", self.max_layer_ratio, 0.0, 1.0)
        IMPORTANCES.get(self.importance)
        if self.round_to != "auto" and (not isinstance(self.round_to, int) or isinstance(self.round_to, bool)
                                        or self.round_to < 1):
            raise ConfigError(f"round_to must be an int >= 1 or 'auto' (the target's channel multiple), got "
                              f"{self.round_to!r}")
        if not isinstance(self.round_floor, int) or isinstance(self.round_floor, bool) or self.round_floor < 0:
            raise ConfigError(f"round_floor must be an int >= 0, got {self.round_floor!r}")
        if self.round_floor and isinstance(self.round_to, int) and (
                self.round_floor >= self.round_to or self.round_to % self.round_floor):
            raise ConfigError(f"round_floor ({self.round_floor}) must divide round_to ({self.round_to}) and be "
                              "smaller than it")
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1:
            raise ConfigError(f"steps must be an int >= 1, got {self.steps!r}")
        if not isinstance(self.global_ratio, bool):
            raise ConfigError(f"global_ratio must be a bool, got {self.global_ratio!r}")


@dataclass(frozen=True)
class PruneResult:
    """A pruned copy of the model and its analytic cost before and after (params, MACs)."""

    model: nn.Module
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    steps: int

    def to_dict(self) -> dict[str, Any]:
        return {"params_before": self.params_before, "params_after": self.params_after,
                "macs_before": self.macs_before, "macs_after": self.macs_after, "steps": self.steps,
                "macs_ratio": self.macs_before / max(self.macs_after, 1)}


def classifier_layers(model: nn.Module, input_shape: tuple[int, ...]) -> list[nn.Module]:
    """The layers whose output is the model's output (their output channels are the classes: never pruned):
    the last Linear/Conv2d executed in a forward pass on a (1, *input_shape) zero input."""
    order: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda mod, _i, _o: order.append(mod)) for m in model.modules()
             if isinstance(m, nn.Linear | nn.Conv2d)]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
    if not order:
        raise UnsupportedOpError(f"{type(model).__name__} has no Conv2d or Linear layer to prune")
    return [order[-1]]


@PRUNERS.register("channel")
class StructuredPruner:
    """Estimator over a copy of the model: `fit(model, input_shape, batch=None, finetune=None)` prunes the
    copy in `config.steps` steps (finetune(model) -> model after each) and stores `result_` (a `PruneResult`).
    `batch` = (x, y) is required for the "taylor" criterion (first-order gradients). The input is untouched."""

    def __init__(self, config: PruneConfig | None = None) -> None:
        self.config = config or PruneConfig()

    def fit(self, model: nn.Module, input_shape: tuple[int, ...], *,
            batch: tuple[torch.Tensor, torch.Tensor] | None = None,
            finetune: Finetune | None = None,
            layer_ratios: Mapping[str, float] | None = None) -> StructuredPruner:
        """layer_ratios: prune only these layers (module path → fraction of its output channels, and of the
        channels coupled to them, in (0, 1): round(fraction · channels) of them go, then rounded to
        `round_to`), ignoring `config.ratio` and `global_ratio`; a path that is not a prunable layer (see
        `prunable_layers`) → ConfigError naming it."""
        cfg = self.config
        if cfg.importance in NEEDS_GRADIENTS and batch is None:
            raise ConfigError(f"importance {cfg.importance!r} needs a labelled batch: pass batch=(x, y)")
        net = copy.deepcopy(model).eval()
        before = analyze(net, input_shape)
        pruner = self._pruner(net, input_shape, layer_ratios)
        for _ in range(cfg.steps):
            if cfg.importance in NEEDS_GRADIENTS and batch is not None:
                _accumulate_gradients(net, batch)
            pruner.step()
            net.zero_grad(set_to_none=True)
            if finetune is not None:
                net = _finetuned(finetune, net)
        after = analyze(net.eval(), input_shape)
        self.result_ = PruneResult(net, before.params, after.params, before.macs, after.macs, cfg.steps)
        return self

    def _pruner(self, net: nn.Module, input_shape: tuple[int, ...],
                layer_ratios: Mapping[str, float] | None = None) -> Any:
        cfg, tp = self.config, _tp()
        if not isinstance(cfg.round_to, int):
            raise ConfigError(f"round_to={cfg.round_to!r} names the target's channel multiple: resolve it first with "
                              "hardware.channel_multiple(target) (the prune job does), or give a number")
        by_layer = None if layer_ratios is None else _layer_ratio_dict(net, layer_ratios)
        try:
            pruner = _pruner_class(tp, cfg.round_floor)(
                net, torch.zeros(1, *input_shape), importance=make_importance(cfg.importance),
                global_pruning=cfg.global_ratio and by_layer is None,
                pruning_ratio=cfg.ratio if by_layer is None else 0.0, pruning_ratio_dict=by_layer,
                max_pruning_ratio=cfg.max_layer_ratio, iterative_steps=cfg.steps,
                ignored_layers=_ignored(net, input_shape, cfg.on_unsupported), round_to=cfg.round_to)
        except Exception as e:  # the dependency graph raises on ops it cannot trace
            raise UnsupportedOpError(f"Torch-Pruning cannot build the dependency graph of "
                                     f"{type(net).__name__}: {e}") from e
        if by_layer is not None:
            roots = _group_roots(pruner.DG, pruner.ignored_layers, net)
            for name in layer_ratios or {}:
                if name not in roots:
                    raise ConfigError(f"layer_ratios names {name!r}, which is not a prunable layer; prunable: "
                                      f"{', '.join(list(roots)[:8])}{' ...' if len(roots) > 8 else ''}")
        return pruner


def one_group_channels(channels: int, config: PruneConfig) -> int:
    """Channels one group takes from a layer of `channels` under `config` (an int `round_to`): `round_to`, or
    `round_floor` where `round_to` would leave less than itself; 0 where even that would."""
    step = int(config.round_to)
    if channels >= 2 * step:
        return step
    return config.round_floor if config.round_floor and channels >= 2 * config.round_floor else 0


def _layer_ratio_dict(net: nn.Module, layer_ratios: Mapping[str, float]) -> dict[nn.Module, float]:
    """Torch-Pruning's pruning_ratio_dict for `layer_ratios`. It removes channels - int(channels · (1 - ratio));
    half a channel of headroom makes that round(ratio · channels) whatever the float rounding, before its own
    rounding to round_to."""
    out: dict[nn.Module, float] = {}
    for name, r in layer_ratios.items():
        check_range(f"layer_ratios[{name!r}]", r, 0.0, 1.0)
        try:
            module = net.get_submodule(name)
        except AttributeError:
            module = None
        channels = getattr(module, "out_channels", None) or getattr(module, "out_features", None)
        if module is None or not channels:
            raise ConfigError(f"layer_ratios names {name!r}, which is not a convolution or linear layer of "
                              f"{type(net).__name__}")
        if round(r * channels) < 1:
            raise ConfigError(f"layer_ratios[{name!r}]={r:g} removes no channel of its {channels}")
        out[module] = (round(r * channels) - 0.5) / channels
    return out


def _group_roots(graph: Any, ignored: list[nn.Module], net: nn.Module) -> dict[str, int]:
    """{module path: output channels} of the layers leading the prunable groups of Torch-Pruning's `graph`."""
    names = {m: n for n, m in net.named_modules()}
    out: dict[str, int] = {}
    for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=[nn.modules.conv._ConvNd, nn.Linear]):
        root = group[0][0].target.module
        channels = graph.get_out_channels(root)
        if root in names and channels:
            out[names[root]] = int(channels)
    return out


def prunable_layers(model: nn.Module, input_shape: tuple[int, ...], config: PruneConfig | None = None
                    ) -> dict[str, int]:
    """{module path: output channels} of the layers that lead a prunable channel group (the layer whose output
    channels, with everything coupled to them through residual additions, depthwise groups or concatenation, are
    removed together), in Torch-Pruning's graph order; the classifier and, with `on_unsupported="skip"`,
    modules the graph cannot follow are left out. The model is not modified."""
    cfg, tp = config or PruneConfig(), _tp()
    net = copy.deepcopy(model).eval()
    ignored = _ignored(net, input_shape, cfg.on_unsupported)
    try:
        graph = tp.DependencyGraph().build_dependency(net, example_inputs=torch.zeros(1, *input_shape))
    except Exception as e:
        raise UnsupportedOpError(f"Torch-Pruning cannot build the dependency graph of {type(net).__name__}: {e}") \
            from e
    return _group_roots(graph, ignored, net)


def _pruner_class(tp: Any, round_floor: int) -> Any:
    """Torch-Pruning's `BasePruner`, or with `round_floor` a subclass whose rounding keeps a multiple of
    `round_floor` where a multiple of `round_to` would be below `round_to` (its `_round_to` hook: kept channels
    = current - pruned, rounded down; Torch-Pruning skips a group that would lose every channel)."""
    if not round_floor:
        return tp.pruner.BasePruner

    class _FloorRounding(tp.pruner.BasePruner):  # type: ignore[misc, name-defined]
        def _round_to(self, n_pruned: int, current_channels: int, round_to: int) -> int:
            kept = current_channels - n_pruned
            step = round_floor if kept < round_to else round_to
            return max(current_channels - (kept - kept % step), 0)

    return _FloorRounding


def _accumulate_gradients(net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    net.zero_grad(set_to_none=True)
    net.eval()
    x, y = batch
    F.cross_entropy(net(x), y).backward()


def _finetuned(finetune: Finetune, net: nn.Module) -> nn.Module:
    out = finetune(net)
    if not isinstance(out, nn.Module):
        raise ConfigError(f"finetune must return the nn.Module it trained, got {type(out).__name__}")
    return out.eval()


_OPAQUE_OPS = (torch.index_select, torch.gather, "index_select", "gather")


def unsupported_modules(model: nn.Module) -> dict[str, str]:
    """{module path: op} for modules that move channels with a constant-index gather, which Torch-Pruning's
    dependency graph cannot follow (found on a torch.fx trace; an untraceable model reports nothing)."""
    try:
        gm = fx.symbolic_trace(copy.deepcopy(model))
    except Exception:  # fx cannot trace data-dependent control flow; Torch-Pruning itself may still cope
        return {}
    found: dict[str, str] = {}
    for node in gm.graph.nodes:
        if node.op in ("call_function", "call_method") and node.target in _OPAQUE_OPS:
            stack = node.meta.get("nn_module_stack") or {}
            path = next(reversed(stack.values()))[0] if stack else "(top level)"
            found.setdefault(path, getattr(node.target, "__name__", str(node.target)))
    return found


def _ignored(net: nn.Module, input_shape: tuple[int, ...], on_unsupported: str) -> list[nn.Module]:
    bad = unsupported_modules(net)
    if bad and on_unsupported == "error":
        where = ", ".join(f"{path} ({type(net.get_submodule(path)).__name__ if path != '(top level)' else ''} "
                          f"uses {op})" for path, op in list(bad.items())[:3])
        raise UnsupportedOpError(f"cannot prune channels through {where}; the dependency graph cannot follow a "
                                 f"constant-index gather. Set on_unsupported='skip' to leave those layers unpruned")
    if bad:
        warnings.warn(f"structured pruning leaves {len(bad)} module(s) unpruned: {', '.join(bad)}", stacklevel=3)
    skipped = [net.get_submodule(p) if p != "(top level)" else net for p in bad]
    return classifier_layers(net, input_shape) + skipped
