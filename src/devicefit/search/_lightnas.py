"""LightNAS (Luo et al., DAC 2022): one differentiable single-path search that lands on a cost target T.

Per layer, architecture logits α; each step samples a hard Gumbel-softmax one-hot h (straight-through) at
temperature τ (decayed exponentially), runs that single path of the supernet, and minimises
    L = CE + λ · (LAT(α) / T − 1)                                                      (LightNAS eq. 6)
over α, then raises λ by gradient ascent, λ ← λ + η · (LAT(α) / T − 1) (eq. 7), so no trade-off coefficient
needs tuning: λ grows while the cost exceeds T and turns negative (spend more) while it is below.
LAT(α) is `cost(softmax(α))` (`cost_mode="expected"`, the default: for a per-layer table this is exactly the
expected cost of the sampled path, with a gradient that never saturates) or `cost(h)` of the sampled path
(`cost_mode="sampled"`, straight-through; its gradient vanishes once the relaxed sample is nearly one-hot). Supernet
weights are trained by CE on the sampled path; the first `warmup_epochs` train weights only (uniform paths).
LAT is injected (any differentiable function of the one-hot matrix); `LinearCost` is a per-layer lookup table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from devicefit.core import ArchSpec, ConfigError, NotFittedError, check_positive

__all__ = ["LightNAS", "LightNASConfig", "LinearCost"]

Batches = Iterable[tuple[Tensor, Tensor]]


class LinearCost:
    """Differentiable per-layer lookup: cost(h) = `constant` + Σ h ⊙ `table` for a (layers, ops) one-hot h.
    Impossible entries (NaN in the table) count 0 (their logits are masked, so h is 0 there)."""

    def __init__(self, constant: float, table: Any) -> None:
        self.constant = float(constant)
        self.table = torch.as_tensor(np.nan_to_num(np.asarray(table, dtype=np.float64)), dtype=torch.float32)

    def __call__(self, onehot: Tensor) -> Tensor:
        return self.constant + (onehot * self.table).sum()


@dataclass(frozen=True)
class LightNASConfig:
    """`target` T in the cost model's unit; `epochs` in total, the first `warmup_epochs` weight-only; τ decays
    from `tau_start` to `tau_end`; α by Adam at `arch_lr`; λ by ascent at `lambda_lr` (η), from `lambda_init`;
    weights by SGD (momentum 0.9) at `weight_lr`; `cost_mode` "expected" or "sampled" (see the module)."""

    target: float
    epochs: int = 10
    warmup_epochs: int = 2
    tau_start: float = 5.0
    tau_end: float = 0.2
    arch_lr: float = 3e-2
    lambda_lr: float = 0.5
    lambda_init: float = 0.0
    weight_lr: float = 0.05
    cost_mode: str = "expected"
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive("target", self.target)
        for name in ("tau_start", "tau_end", "arch_lr", "lambda_lr", "weight_lr"):
            check_positive(name, getattr(self, name))
        if self.cost_mode not in ("expected", "sampled"):
            raise ConfigError(f"cost_mode must be 'expected' or 'sampled', got {self.cost_mode!r}")
        if not isinstance(self.epochs, int) or not 0 <= self.warmup_epochs < self.epochs:
            raise ConfigError(f"warmup_epochs must be in 0..epochs-1 ({self.epochs}), got {self.warmup_epochs}")


class LightNAS:
    """Estimator: `LightNAS(supernet, cost, config)` stores; `fit(train_batches, val_batches)` searches and
    returns self. The supernet must offer `forward_weighted(x, weights)`, `space` (with `layer_stage()`),
    `active_` (the widths used) and `train()`; `cost(h)` maps the (layers, ops) one-hot to a scalar tensor.

    Learned: `alpha_` (layers, ops) logits, `lambda_`, `spec_` (argmax architecture at the active widths),
    `cost_` (its cost by the model) and `history_` (one dict per architecture step: step, epoch, tau, cost,
    lambda_before, lambda_after).
    """

    def __init__(self, supernet: Any, cost: Callable[[Tensor], Tensor], config: LightNASConfig) -> None:
        self.supernet = supernet
        self.cost = cost
        self.config = config

    def fit(self, train_batches: Batches, val_batches: Batches) -> LightNAS:
        cfg, net = self.config, self.supernet
        ops = self._ops()
        mask = self._mask(len(ops))
        gen = torch.Generator().manual_seed(cfg.seed)
        alpha = torch.zeros(mask.shape, requires_grad=True)
        a_opt = torch.optim.Adam([alpha], lr=cfg.arch_lr)
        w_opt = torch.optim.SGD(net.parameters(), lr=cfg.weight_lr, momentum=0.9)
        lam, history = cfg.lambda_init, []
        for epoch in range(cfg.epochs):
            tau = self._tau(epoch)
            search = epoch >= cfg.warmup_epochs
            for (xt, yt), (xv, yv) in zip(train_batches, _cycle(val_batches), strict=False):
                if search:
                    lam = self._arch_step(alpha, a_opt, mask, tau, lam, xv, yv, gen, history, epoch)
                self._weight_step(alpha if search else torch.zeros_like(alpha), mask, tau, xt, yt, w_opt, gen)
        self.alpha_ = alpha.detach()
        self.lambda_ = lam
        self.history_ = history
        self.spec_ = self._argmax_spec(ops)
        self.cost_ = float(self.cost(_onehot(self.alpha_.masked_fill(~mask, -math.inf).argmax(1), len(ops))))
        return self

    # -- steps --------------------------------------------------------------------------------------

    def _arch_step(self, alpha: Tensor, opt: torch.optim.Optimizer, mask: Tensor, tau: float, lam: float,
                   x: Tensor, y: Tensor, gen: torch.Generator, history: list[dict[str, float]], epoch: int) -> float:
        T = self.config.target
        h = _gumbel_hard(alpha, mask, tau, gen)  # (layers, ops), straight-through
        self.supernet.train()
        probs = alpha.masked_fill(~mask, -math.inf).softmax(dim=1)
        cost = self.cost(probs if self.config.cost_mode == "expected" else h)  # scalar, differentiable in α
        loss = F.cross_entropy(self.supernet.forward_weighted(x, h), y) + lam * (cost / T - 1.0)
        opt.zero_grad()
        self.supernet.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        new = lam + self.config.lambda_lr * (float(cost.detach()) / T - 1.0)  # LightNAS eq. 7
        history.append({"step": len(history), "epoch": epoch, "tau": tau, "cost": float(cost.detach()),
                        "lambda_before": lam, "lambda_after": new})
        return new

    def _weight_step(self, alpha: Tensor, mask: Tensor, tau: float, x: Tensor, y: Tensor,
                     opt: torch.optim.Optimizer, gen: torch.Generator) -> None:
        h = _gumbel_hard(alpha.detach(), mask, tau, gen)
        self.supernet.train()
        loss = F.cross_entropy(self.supernet.forward_weighted(x, h), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    # -- helpers ------------------------------------------------------------------------------------

    def _ops(self) -> tuple[str, ...]:
        from devicefit.space import MBCONV_OPS

        if getattr(self.supernet, "active_", None) is None:
            raise NotFittedError("the supernet has no active spec: call supernet.set_active(spec) to fix the "
                                 "stage widths LightNAS searches at")
        return MBCONV_OPS

    def _mask(self, n_ops: int) -> Tensor:
        """(layers, ops) bool: False where an op is impossible (skip in a stage's first layer)."""
        first = [f for _, f in self.supernet.space.layer_stage()]
        mask = torch.ones(len(first), n_ops, dtype=torch.bool)
        for i, f in enumerate(first):
            if f:
                mask[i, -1] = False  # skip is the last op
        return mask

    def _tau(self, epoch: int) -> float:
        cfg = self.config
        span = max(cfg.epochs - cfg.warmup_epochs - 1, 1)
        t = min(max(epoch - cfg.warmup_epochs, 0) / span, 1.0)
        return cfg.tau_start * (cfg.tau_end / cfg.tau_start) ** t

    def _argmax_spec(self, ops: tuple[str, ...]) -> ArchSpec:
        mask = self._mask(len(ops))
        idx = self.alpha_.masked_fill(~mask, -math.inf).argmax(1)
        base = self.supernet.active_
        return base.replace(ops=tuple(ops[int(i)] for i in idx))  # type: ignore[no-any-return]

    def result(self) -> dict[str, Any]:
        """JSON-ready summary: the chosen spec, its cost, target, final λ and the step history."""
        if not hasattr(self, "spec_"):
            raise NotFittedError("LightNAS is not fitted; call fit(train_batches, val_batches) first")
        return {"spec": self.spec_.to_dict(), "cost": self.cost_, "target": self.config.target,
                "lambda": self.lambda_, "history": self.history_}


def _gumbel_hard(alpha: Tensor, mask: Tensor, tau: float, gen: torch.Generator) -> Tensor:
    """Hard Gumbel-softmax with a seeded generator: forward one-hot, backward softmax gradient."""
    u = torch.rand(alpha.shape, generator=gen).clamp_(1e-10, 1.0 - 1e-10)
    logits = (alpha - torch.log(-torch.log(u))).masked_fill(~mask, -math.inf) / tau
    soft = logits.softmax(dim=1)
    hard = _onehot(soft.argmax(1), alpha.shape[1])
    return hard - soft.detach() + soft


def _onehot(idx: Tensor, n: int) -> Tensor:
    return F.one_hot(idx, n).float()


def _cycle(batches: Batches) -> Iterable[tuple[Tensor, Tensor]]:
    while True:
        empty = True
        for b in batches:
            empty = False
            yield b
        if empty:
            raise ConfigError("val_batches is empty")
