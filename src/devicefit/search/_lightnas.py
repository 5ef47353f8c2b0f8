"""LightNAS (Luo et al., DAC 2022): one differentiable single-path search that lands on a cost target T.

Per layer, architecture logits α; each step samples a hard Gumbel-softmax one-hot h (straight-through) at
temperature τ (decayed exponentially), runs that single path of the supernet, and minimises
    L = CE + λ_eff · (LAT(α) / T − 1),   λ_eff = λ + κ · (LAT(α) / T − 1)              (LightNAS eq. 6)
over α, then raises λ by gradient ascent, λ ← λ + η · (LAT(α) / T − 1) (eq. 7), so no trade-off coefficient
needs tuning: λ grows while the cost exceeds T and turns negative (spend more) while it is below.
Three departures from the paper's defaults, each chosen by measurement (tests/test_search_lightnas.py space,
5 targets, 56 architecture steps; benchmarks/nas_lightnas.py on `mbconv`):
- κ = `damping` (default 30) is the damping term of Platt & Barr's modified differential method of
  multipliers (the gradient of (κ/2)·(LAT/T − 1)²). Plain ascent on λ against Adam on α is an undamped
  oscillator: λ winds up while the cost approaches T and carries it ±25 % past T (periods of ~80 steps).
  Adam follows the sign of the gradient, so κ must exceed |λ| / |LAT/T − 1| to turn α before the crossing:
  κ = 1 or 4 changed nothing measurable, κ = 30 with η = 0.1 kept the cost within a few % of T.
- LAT is evaluated on the argmax architecture with the softmax's gradient (`cost_mode="argmax"`, straight-
  through): on the expected cost (`"expected"`, cost(softmax(α))) the controller can settle with LAT(α) = T
  while the argmax architecture, with several layers at split probabilities, is 40–80 % off. With the argmax
  mode the searched architecture itself was within 5 % of T for 4 of 5 targets (paper rule: 0 of 5).
  `"sampled"` evaluates the Gumbel sample (noisiest).
- A final **repair** closes the remaining gap (`repair=True`, the default): while the argmax architecture's
  cost is off by more than `tolerance` · T, swap the one layer op that brings the cost strictly closer to T at
  the smallest loss of logit (α[layer, chosen] − α[layer, new]): a greedy walk down α's ranking, which ends
  within tolerance or where no single swap gets closer. Every swap is recorded (`repairs_`); the search's own
  argmax architecture stays available (`search_spec_`, `search_cost_`).
Optional **measured anchoring** (`LightNAS(..., measure=fn)`, fn(spec) -> the architecture's cost measured on
the device, in LAT's unit): a table or predictor carries a bias near any given architecture (a fitted latency
table was 27 % off on one searched network) and the device drifts; a measurement removes both. LAT is scaled
by s = measured / LAT(argmax architecture), refreshed every `measure_every` architecture steps during the
search (0: never during the search) and, after the repair, in a closing loop: measure the result; while it is
off T by more than `closing_tolerance`, re-anchor s on it and repair again under the scaled cost, at most
`max_measurements` times; the result is the measured architecture closest to T (so `repairs_` may hold swaps
the result does not keep). Every measurement is recorded (`measurements_`). It is still one search run: the
loop changes a few layers of the searched architecture, it does not search again.
`lambda_min` can clamp λ (e.g. ≥ 0, "spend no more than T"); it was not needed to land. Supernet weights are
trained by CE on the sampled path; the first `warmup_epochs` train weights only (uniform paths). LAT is
injected (any differentiable function of the (layers, ops) matrix); `LinearCost` is a per-layer table (MACs,
parameters: `devicefit.space._mbconv_cost.mbconv_cost_table`, or a latency lookup); `MaxCost` a bottleneck
table (peak SRAM: `mbconv_peak_table`, exact against `nn.analyze`). `lambda_lr=0, damping=0,
repair=False` is the fixed-coefficient baseline (FBNet / ProxylessNAS: CE + β·LAT/T with β = `lambda_init`).
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

from devicefit.core import ArchSpec, ConfigError, NotFittedError, check_choice, check_int, check_positive, check_range

__all__ = ["LightNAS", "LightNASConfig", "LinearCost", "MaxCost"]

Batches = Iterable[tuple[Tensor, Tensor]]
COST_MODES = ("argmax", "expected", "sampled")


class LinearCost:
    """Differentiable per-layer lookup: cost(h) = `constant` + Σ h ⊙ `table` for a (layers, ops) one-hot h.
    Impossible entries (NaN in the table) count 0 (their logits are masked, so h is 0 there)."""

    def __init__(self, constant: float, table: Any) -> None:
        self.constant = float(constant)
        self.table = torch.as_tensor(np.nan_to_num(np.asarray(table, dtype=np.float64)), dtype=torch.float32)

    def __call__(self, onehot: Tensor) -> Tensor:
        return self.constant + (onehot * self.table).sum()


class MaxCost:
    """Differentiable bottleneck cost: cost(h) = max(`floor`, max over layers of Σ_ops h ⊙ `table`) for a
    (layers, ops) one-hot h: peak SRAM, where the largest block's live activations set the arena
    (`devicefit.space._mbconv_cost.mbconv_peak_table`). The gradient reaches the bottleneck layer's choice
    (the max's subgradient), so the multiplier reshapes that layer until another one, or the floor, binds.
    Impossible entries (NaN) count 0, as in `LinearCost`."""

    def __init__(self, floor: float, table: Any) -> None:
        raw = np.asarray(table, dtype=np.float64)
        self.floor = float(floor)
        self.raw = raw  # NaN where impossible
        self.table = torch.as_tensor(np.nan_to_num(raw), dtype=torch.float32)

    def __call__(self, onehot: Tensor) -> Tensor:
        per_layer = (onehot * self.table).sum(dim=1)
        return torch.maximum(per_layer.max(), torch.tensor(self.floor, dtype=per_layer.dtype))

    def range(self) -> tuple[float, float]:
        """(smallest, largest) cost over every op choice (impossible entries excluded)."""
        lo = float(np.nanmax(np.nanmin(self.raw, axis=1)))
        return max(self.floor, lo), max(self.floor, float(np.nanmax(self.raw)))


@dataclass(frozen=True)
class LightNASConfig:
    """`target` T in the cost model's unit; `epochs` in total, the first `warmup_epochs` weight-only; τ decays
    from `tau_start` to `tau_end`; α by Adam at `arch_lr`; λ by ascent at `lambda_lr` (η ≥ 0; 0 keeps λ fixed)
    from `lambda_init`; `damping` κ ≥ 0 adds κ·(LAT/T − 1) to λ in the loss (see the module); `lambda_min`
    clamps λ from below after each ascent step (None: unclamped, the paper's rule); weights by SGD (momentum
    0.9) at `weight_lr`; `cost_mode` one of COST_MODES ("argmax", "expected", "sampled": the matrix LAT is
    evaluated on, see the module); `repair` runs the final greedy repair until the argmax cost is within
    `tolerance` (a fraction of T, in (0, 1)) of T. With a `measure` function (measured anchoring, see the
    module): `measure_every` architecture steps between measurements during the search (0: none), at most
    `max_measurements` in the closing loop, which stops once the measured cost is within `closing_tolerance`
    (a fraction of T) of T. `lambda_lr=0, damping=0, repair=False` with `lambda_init=β` is the
    fixed-coefficient (FBNet / ProxylessNAS) baseline."""

    target: float
    epochs: int = 10
    warmup_epochs: int = 2
    tau_start: float = 5.0
    tau_end: float = 0.2
    arch_lr: float = 3e-2
    lambda_lr: float = 0.1
    lambda_init: float = 0.0
    damping: float = 30.0
    lambda_min: float | None = None
    weight_lr: float = 0.05
    cost_mode: str = "argmax"
    repair: bool = True
    tolerance: float = 0.05
    measure_every: int = 0
    max_measurements: int = 4
    closing_tolerance: float = 0.025
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive("target", self.target)
        for name in ("tau_start", "tau_end", "arch_lr", "weight_lr"):
            check_positive(name, getattr(self, name))
        for name in ("lambda_lr", "damping"):
            check_positive(name, getattr(self, name), allow_zero=True)
        check_range("tolerance", self.tolerance, 0.0, 1.0)
        check_range("closing_tolerance", self.closing_tolerance, 0.0, 1.0)
        for name in ("measure_every", "max_measurements"):
            check_int(name, getattr(self, name))
        if not isinstance(self.lambda_init, int | float) or isinstance(self.lambda_init, bool):
            raise ConfigError(f"lambda_init must be a number, got {self.lambda_init!r}")
        if self.lambda_min is not None and not (isinstance(self.lambda_min, int | float)
                                                and self.lambda_min <= self.lambda_init):
            raise ConfigError(f"lambda_min must be None or a number <= lambda_init ({self.lambda_init}), "
                              f"got {self.lambda_min!r}")
        check_choice("cost_mode", self.cost_mode, COST_MODES)
        if not isinstance(self.repair, bool):
            raise ConfigError(f"repair must be a bool, got {self.repair!r}")
        check_int("epochs", self.epochs, 1)
        if not isinstance(self.warmup_epochs, int) or not 0 <= self.warmup_epochs < self.epochs:
            raise ConfigError(f"warmup_epochs must be in 0..epochs-1 ({self.epochs}), got {self.warmup_epochs}")


class LightNAS:
    """Estimator: `LightNAS(supernet, cost, config)` stores; `fit(train_batches, val_batches)` searches and
    returns self. The supernet must offer `forward_weighted(x, weights)`, `space` (with `layer_stage()`),
    `active_` (the widths used) and `train()`; `cost(h)` maps the (layers, ops) one-hot to a scalar tensor.
    The result `spec_` is within `tolerance` of T whenever single-op swaps along α's ranking can reach it;
    otherwise it is the closest architecture the greedy repair reached (check `cost_` against the target).

    Learned: `alpha_` (layers, ops) logits, `lambda_`, `search_spec_` / `search_cost_` (argmax architecture
    at the active widths and its cost, before repair), `spec_` / `cost_` (after repair: the result),
    `repairs_` (one dict per swap: layer, from, to, logit_drop, cost_before, cost_after) and `history_` (one
    dict per architecture step: step, epoch, tau, cost (LAT as evaluated in that step's loss), cost_argmax
    (the argmax architecture's cost after the step), lambda_before, lambda_eff, lambda_after, scale, argmax
    (that architecture: an op index per layer, into MBCONV_OPS)).
    With `measure`: costs above are LAT scaled by the anchor s (`scale_`, 1 without measurements), and
    `measurements_` holds one dict per measurement: step (None in the closing loop), phase ("search" or
    "closing"), spec, predicted (unscaled LAT), measured, scale_after.
    """

    def __init__(self, supernet: Any, cost: Callable[[Tensor], Tensor], config: LightNASConfig,
                 measure: Callable[[ArchSpec], float] | None = None) -> None:
        if measure is not None and not callable(measure):
            raise ConfigError(f"measure must be a callable spec -> measured cost or None, got {measure!r}")
        self.supernet = supernet
        self.cost = cost
        self.config = config
        self.measure = measure

    def fit(self, train_batches: Batches, val_batches: Batches,
            on_batch: Callable[[int, int], None] | None = None) -> LightNAS:
        """Search (see the class); `on_batch(epoch, batch)` is called after every training batch (progress)."""
        cfg, net = self.config, self.supernet
        ops = self._ops()
        mask = self._mask(len(ops))
        gen = torch.Generator().manual_seed(cfg.seed)
        alpha = torch.zeros(mask.shape, requires_grad=True)
        a_opt = torch.optim.Adam([alpha], lr=cfg.arch_lr)
        w_opt = torch.optim.SGD(net.parameters(), lr=cfg.weight_lr, momentum=0.9)
        lam, history = float(cfg.lambda_init), []
        self.scale_, self.measurements_ = 1.0, []
        for epoch in range(cfg.epochs):
            tau = self._tau(epoch)
            search = epoch >= cfg.warmup_epochs
            for b, ((xt, yt), (xv, yv)) in enumerate(zip(train_batches, _cycle(val_batches), strict=False)):
                if search:
                    lam = self._arch_step(alpha, a_opt, mask, tau, lam, xv, yv, gen, history, epoch)
                self._weight_step(alpha if search else torch.zeros_like(alpha), mask, tau, xt, yt, w_opt, gen)
                if on_batch is not None:
                    on_batch(epoch, b)
        self.alpha_ = alpha.detach()
        self.lambda_ = lam
        self.history_ = history
        idx = self._argmax(mask)
        self.search_spec_, self.search_cost_ = self._spec(ops, idx), self._cost_of(idx, len(ops))
        self.repairs_ = self._repair(idx, mask, ops) if cfg.repair else []
        if self.measure is not None:
            self._close(idx, mask, ops)
        self.spec_, self.cost_ = self._spec(ops, idx), self._cost_of(idx, len(ops))
        return self

    # -- measured anchoring ---------------------------------------------------------------------------

    def _anchor(self, idx: Tensor, ops: tuple[str, ...], step: int | None) -> float:
        """Measure the architecture `idx`, set the scale to measured / unscaled LAT; return measured / T."""
        assert self.measure is not None
        spec = self._spec(ops, idx)
        measured = float(self.measure(spec))
        if not math.isfinite(measured) or measured <= 0:
            raise ConfigError(f"measure returned {measured!r} for {spec}; expected a positive cost in LAT's unit")
        predicted = self._raw_cost(idx, len(ops))
        self.scale_ = measured / predicted
        self.measurements_.append({"step": step, "phase": "search" if step is not None else "closing",
                                   "spec": spec.to_dict(), "predicted": predicted, "measured": measured,
                                   "scale_after": self.scale_})
        return measured / self.config.target

    def _close(self, idx: Tensor, mask: Tensor, ops: tuple[str, ...]) -> None:
        """The closing loop: measure, re-anchor and repair (to `closing_tolerance`) until the measurement is
        within `closing_tolerance` of T, no swap changes the architecture, or `max_measurements` are spent;
        then `idx` is set to the measured architecture closest to T (and the anchor to its scale), so the
        result is always a measured one. With `repair=False`: one measurement, recorded, and no change."""
        cfg, best = self.config, None
        for k in range(cfg.max_measurements):
            off = abs(self._anchor(idx, ops, None) - 1.0)
            if best is None or off < best[0]:
                best = (off, idx.clone(), self.scale_)
            if off <= cfg.closing_tolerance or not cfg.repair or k == cfg.max_measurements - 1:
                break
            before = idx.clone()
            self.repairs_ += self._repair(idx, mask, ops, cfg.closing_tolerance)
            if torch.equal(before, idx):
                break
        if best is not None:
            idx.copy_(best[1])
            self.scale_ = best[2]

    # -- steps --------------------------------------------------------------------------------------

    def _arch_step(self, alpha: Tensor, opt: torch.optim.Optimizer, mask: Tensor, tau: float, lam: float,
                   x: Tensor, y: Tensor, gen: torch.Generator, history: list[dict[str, float]], epoch: int) -> float:
        cfg = self.config
        h = _gumbel_hard(alpha, mask, tau, gen)  # (layers, ops), straight-through
        self.supernet.train()
        masked = alpha.masked_fill(~mask, -math.inf)
        cost = self.scale_ * self.cost(_relaxed(masked, h, cfg.cost_mode))  # scalar, differentiable in α
        excess = float(cost.detach()) / cfg.target - 1.0  # LAT/T − 1
        lam_eff = lam + cfg.damping * excess  # MDMM damping: gradient of (κ/2)·excess² added to λ·excess
        loss = F.cross_entropy(self.supernet.forward_weighted(x, h), y) + lam_eff * (cost / cfg.target - 1.0)
        opt.zero_grad()
        self.supernet.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        new = lam + cfg.lambda_lr * excess  # LightNAS eq. 7
        if cfg.lambda_min is not None:
            new = max(new, cfg.lambda_min)
        step, idx = len(history), masked.detach().argmax(1)
        if self.measure is not None and cfg.measure_every and (step + 1) % cfg.measure_every == 0:
            self._anchor(idx, self._ops(), step)
        argmax_cost = self._cost_of(idx, alpha.shape[1])
        history.append({"step": step, "epoch": epoch, "tau": tau, "cost": float(cost.detach()),
                        "cost_argmax": argmax_cost, "lambda_before": lam, "lambda_eff": lam_eff,
                        "lambda_after": new, "scale": self.scale_, "argmax": [int(i) for i in idx]})
        return new

    def _weight_step(self, alpha: Tensor, mask: Tensor, tau: float, x: Tensor, y: Tensor,
                     opt: torch.optim.Optimizer, gen: torch.Generator) -> None:
        h = _gumbel_hard(alpha.detach(), mask, tau, gen)
        self.supernet.train()
        loss = F.cross_entropy(self.supernet.forward_weighted(x, h), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    # -- repair -------------------------------------------------------------------------------------

    def _repair(self, idx: Tensor, mask: Tensor, ops: tuple[str, ...],
                tolerance: float | None = None) -> list[dict[str, Any]]:
        """Greedy repair of `idx` in place (see the module) to within `tolerance` (default: the config's);
        returns the swaps made."""
        T, n = self.config.target, len(ops)
        tol = self.config.tolerance if tolerance is None else tolerance
        cur, swaps = self._cost_of(idx, n), []
        while abs(cur / T - 1.0) > tol:
            move = self._best_swap(idx, mask, cur)
            if move is None:
                break
            layer, op, new_cost = move
            swaps.append({"layer": layer, "from": ops[int(idx[layer])], "to": ops[op],
                          "logit_drop": float(self.alpha_[layer, idx[layer]] - self.alpha_[layer, op]),
                          "cost_before": cur, "cost_after": new_cost})
            idx[layer], cur = op, new_cost
        return swaps

    def _best_swap(self, idx: Tensor, mask: Tensor, cur: float) -> tuple[int, int, float] | None:
        """(layer, op, new cost) of the single swap that gets strictly closer to T at the least logit drop."""
        T, best, key = self.config.target, None, (math.inf, math.inf)
        n_layers, n_ops = mask.shape
        for layer in range(n_layers):
            for op in range(n_ops):
                if op == int(idx[layer]) or not bool(mask[layer, op]):
                    continue
                trial = idx.clone()
                trial[layer] = op
                c = self._cost_of(trial, n_ops)
                k = (float(self.alpha_[layer, idx[layer]] - self.alpha_[layer, op]), abs(c - T))
                if abs(c - T) < abs(cur - T) and k < key:
                    best, key = (layer, op, c), k
        return best

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

    def _argmax(self, mask: Tensor) -> Tensor:
        return self.alpha_.masked_fill(~mask, -math.inf).argmax(1)

    def _raw_cost(self, idx: Tensor, n_ops: int) -> float:
        """LAT of the architecture `idx` as the cost model gives it."""
        with torch.no_grad():
            return float(self.cost(_onehot(idx, n_ops)))

    def _cost_of(self, idx: Tensor, n_ops: int) -> float:
        """LAT of the architecture `idx`, scaled by the measured anchor."""
        return self.scale_ * self._raw_cost(idx, n_ops)

    def _spec(self, ops: tuple[str, ...], idx: Tensor) -> ArchSpec:
        base = self.supernet.active_
        return base.replace(ops=tuple(ops[int(i)] for i in idx))  # type: ignore[no-any-return]

    def result(self) -> dict[str, Any]:
        """JSON-ready summary: the chosen spec and its cost, the search's argmax spec and cost before repair,
        the repairs, target, final λ, the measured anchor's scale and measurements, and the step history."""
        if not hasattr(self, "spec_"):
            raise NotFittedError("LightNAS is not fitted; call fit(train_batches, val_batches) first")
        return {"spec": self.spec_.to_dict(), "cost": self.cost_, "target": self.config.target,
                "search_spec": self.search_spec_.to_dict(), "search_cost": self.search_cost_,
                "repairs": self.repairs_, "lambda": self.lambda_, "scale": self.scale_,
                "measurements": self.measurements_, "history": self.history_}


def _gumbel_hard(alpha: Tensor, mask: Tensor, tau: float, gen: torch.Generator) -> Tensor:
    """Hard Gumbel-softmax with a seeded generator: forward one-hot, backward softmax gradient."""
    u = torch.rand(alpha.shape, generator=gen).clamp_(1e-10, 1.0 - 1e-10)
    logits = (alpha - torch.log(-torch.log(u))).masked_fill(~mask, -math.inf) / tau
    soft = logits.softmax(dim=1)
    hard = _onehot(soft.argmax(1), alpha.shape[1])
    return hard - soft.detach() + soft


def _relaxed(masked: Tensor, sample: Tensor, mode: str) -> Tensor:
    """The (layers, ops) matrix LAT is evaluated on: softmax(α), the sampled path, or argmax(α) with the
    softmax's gradient (straight-through)."""
    probs = masked.softmax(dim=1)
    if mode == "expected":
        return probs
    if mode == "sampled":
        return sample
    return _onehot(masked.detach().argmax(1), masked.shape[1]) - probs.detach() + probs


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
