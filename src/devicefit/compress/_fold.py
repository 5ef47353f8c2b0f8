"""Graph rewrites in PyTorch before quantization: BatchNorm folding, ReLU6 → ReLU, cross-layer equalization
(Nagel et al., 2019, "Data-Free Quantization", DFQ §4.1) and weight-quantization bias correction (DFQ §4.2).

All functions work on a `torch.fx` trace of the model and return a new `GraphModule`; the input is not changed.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
import torch.fx as fx
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from devicefit.core import UnsupportedOpError

__all__ = ["bias_correct_", "equalize_", "fold_batchnorm", "relu6_to_relu_", "trace"]

_ACTS_HOMOGENEOUS = (nn.ReLU, nn.Identity)  # f(s·x) = s·f(x) for s > 0: CLE may scale across them


def trace(model: nn.Module) -> fx.GraphModule:
    """A `torch.fx` trace of a deep copy of `model` in eval mode; an untraceable model → UnsupportedOpError."""
    m = copy.deepcopy(model).eval()
    try:
        return fx.symbolic_trace(m)
    except Exception as e:  # fx raises TraceError, TypeError, ... on data-dependent control flow
        raise UnsupportedOpError(f"cannot trace {type(model).__name__} with torch.fx for graph rewrites: {e}") from e


def _module(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    return gm.get_submodule(str(node.target)) if node.op == "call_module" else None


def _set_module(gm: fx.GraphModule, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, leaf, new)


def fold_batchnorm(model: nn.Module) -> fx.GraphModule:
    """A copy of `model` with every BatchNorm that directly follows a Conv2d/Linear (its only user) folded
    into that layer's weights and bias (eval statistics). A BatchNorm after anything else stays."""
    gm = trace(model)
    for node in list(gm.graph.nodes):
        bn = _module(gm, node)
        if not isinstance(bn, nn.BatchNorm2d | nn.BatchNorm1d) or not node.args:
            continue
        prev = node.args[0]
        layer = _module(gm, prev) if isinstance(prev, fx.Node) else None
        if not isinstance(layer, nn.Conv2d | nn.Linear) or len(prev.users) != 1:
            continue
        fused = fuse_conv_bn_eval(layer, bn) if isinstance(layer, nn.Conv2d) else fuse_linear_bn_eval(layer, bn)
        _set_module(gm, str(prev.target), fused)
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


def relu6_to_relu_(gm: fx.GraphModule) -> int:
    """Replace every `nn.ReLU6` module of `gm` by `nn.ReLU` in place (DFQ does this so CLE can rescale);
    returns how many were replaced. The caller must re-measure accuracy: the clipping at 6 is gone."""
    names = [n for n, m in gm.named_modules() if isinstance(m, nn.ReLU6)]
    for name in names:
        _set_module(gm, name, nn.ReLU())
    return len(names)


def _pairs(gm: fx.GraphModule) -> Iterator[tuple[nn.Conv2d, nn.Conv2d]]:
    """(conv1, conv2) where conv1's only user is conv2, directly or through one positively homogeneous act."""
    for node in gm.graph.nodes:
        c1 = _module(gm, node)
        if not isinstance(c1, nn.Conv2d) or len(node.users) != 1:
            continue
        nxt = next(iter(node.users))
        if isinstance(_module(gm, nxt), _ACTS_HOMOGENEOUS) and len(nxt.users) == 1:
            nxt = next(iter(nxt.users))
        c2 = _module(gm, nxt)
        if isinstance(c2, nn.Conv2d) and _scalable(c1, c2):
            yield c1, c2


def _scalable(c1: nn.Conv2d, c2: nn.Conv2d) -> bool:
    depthwise = c2.groups == c2.in_channels == c2.out_channels
    return c1.out_channels == c2.in_channels and (c2.groups == 1 or depthwise)


def _input_ranges(c2: nn.Conv2d) -> torch.Tensor:
    """Per input channel of `c2`: the max |w| over everything that channel touches."""
    w = c2.weight.detach().abs()
    if c2.groups == 1:
        return w.transpose(0, 1).reshape(c2.in_channels, -1).amax(dim=1)
    return w.reshape(c2.out_channels, -1).amax(dim=1)  # depthwise: input channel i ↔ output channel i


@torch.no_grad()
def _equalize_pair(c1: nn.Conv2d, c2: nn.Conv2d) -> None:
    r1 = c1.weight.abs().reshape(c1.out_channels, -1).amax(dim=1)
    r2 = _input_ranges(c2)
    s = torch.sqrt(r1 * r2) / r2  # DFQ eq. 11: after scaling both ranges equal sqrt(r1 r2)
    s = torch.where((r1 > 0) & (r2 > 0), s, torch.ones_like(s))
    c1.weight.div_(s.view(-1, 1, 1, 1))
    if c1.bias is not None:
        c1.bias.div_(s)
    view = (-1, 1, 1, 1) if c2.groups != 1 else (1, -1, 1, 1)
    c2.weight.mul_(s.view(view))


def equalize_(gm: fx.GraphModule, iterations: int = 4) -> int:
    """Cross-layer equalization in place over every conv pair joined by ReLU/identity (DFQ §4.1), repeated
    `iterations` times so chains converge; returns the number of pairs. Fold BatchNorm first (and turn
    ReLU6 into ReLU): scaling through a BN or a clipping activation would change the function."""
    pairs = list(_pairs(gm))
    for _ in range(iterations):
        for c1, c2 in pairs:
            _equalize_pair(c1, c2)
    return len(pairs)


def _weight_quant_error(layer: nn.Conv2d | nn.Linear, per_channel: bool, bits: int) -> torch.Tensor:
    w = layer.weight.detach()
    qmax = 2 ** (bits - 1) - 1
    absmax = w.abs().reshape(w.shape[0], -1).amax(dim=1) if per_channel else w.abs().amax().expand(w.shape[0])
    scale = (absmax / qmax).clamp_min(1e-12).view(-1, *([1] * (w.dim() - 1)))
    return torch.clamp(torch.round(w / scale), -qmax, qmax) * scale - w


@torch.no_grad()
def bias_correct_(gm: fx.GraphModule, x: torch.Tensor, *, per_channel: bool = True, bits: int = 8) -> int:
    """Empirical bias correction (DFQ §4.2) in place: for each Conv2d/Linear, subtract ΔW·E[input] from its
    bias, where ΔW is the error of symmetric `bits`-bit weight rounding and E[input] the per-channel mean of
    its input on the calibration batch `x` (N, C, H, W). Returns the number of corrected layers."""
    means: dict[nn.Module, torch.Tensor] = {}
    layers = [m for m in gm.modules() if isinstance(m, nn.Conv2d | nn.Linear)]

    def hook(mod: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        a = args[0]
        means[mod] = a.mean(dim=(0, 2, 3)) if a.dim() == 4 else a.mean(dim=0)

    handles = [m.register_forward_pre_hook(hook) for m in layers]
    try:
        gm.eval()(x)
    finally:
        for h in handles:
            h.remove()
    for layer in layers:
        _correct_one(layer, means[layer], per_channel, bits)
    return len(layers)


def _correct_one(layer: nn.Conv2d | nn.Linear, mean: torch.Tensor, per_channel: bool, bits: int) -> None:
    dw = _weight_quant_error(layer, per_channel, bits)
    if isinstance(layer, nn.Conv2d):
        kh, kw = dw.shape[2:]
        const = mean.view(1, -1, 1, 1).expand(1, -1, kh, kw)  # E[x] at every tap (padding ignored)
        shift = torch.nn.functional.conv2d(const, dw, groups=layer.groups).flatten()
    else:
        shift = dw @ mean
    if layer.bias is None:
        layer.bias = nn.Parameter(torch.zeros(dw.shape[0], dtype=dw.dtype))
    layer.bias.sub_(shift)
