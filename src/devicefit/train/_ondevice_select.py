"""The budgeted selector: which layers, channels and biases to update within a training-memory budget,
chosen by measured gain per modelled byte (the sparse-update search of MCUNetV3, Lin et al. 2022, §3.2:
contribution analysis per layer and channel ratio, then a greedy pick under the memory constraint).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from torch import nn

from devicefit.core import BudgetError, ConfigError, NotFittedError, check_positive
from devicefit.data import ArrayDataset
from devicefit.hardware import TrainMemoryReport

from ._config import TrainConfig
from ._evaluate import evaluate
from ._loop import fit
from ._ondevice_adapt import check_adaptation_data, modelled_memory
from ._ondevice_schemes import SchemeConfig, prepare, weight_layers

__all__ = ["BudgetedSelector", "Candidate"]


@dataclass(frozen=True)
class Candidate:
    """One probed update: weights of `layer` at `ratio` (layer None: biases only) with biases of the
    last `bias_layers` layers; `gain` = validation loss before − after the probe; `cost_bytes` its
    modelled budget bytes alone."""

    layer: int | None
    ratio: float
    bias_layers: int
    gain: float
    cost_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class BudgetedSelector:
    """Estimator choosing a "sparse" `SchemeConfig` whose modelled `budget_bytes` (saved activations +
    gradients + optimizer state at `cfg.batch_size`) fits `budget_bytes`.

    `fit(model, train_ds, val_ds, input_shape=..., num_classes=...)` measures each candidate's gain by
    fine-tuning a copy on `train_ds` and scoring `val_ds` (cross-entropy), then adds
    candidates greedily by gain per byte while the merged plan still fits; the merged plan is probed too
    and kept only if it beats the best single candidate that fits (gains need not add up). Probes train
    `probe_epochs` epochs with `cfg` otherwise (no warm-up). Learned: `scheme_`, `gain_`,
    `memory_` (its `TrainMemoryReport`), `candidates_`, `minimal_bytes_` (the smallest update: the
    last layer's bias). A budget below `minimal_bytes_` raises `BudgetError` stating it.
    """

    def __init__(self, budget_bytes: int, cfg: TrainConfig, *, probe_epochs: int = 1,
                 ratios: tuple[float, ...] = (1.0, 0.5, 0.25), mask_bits: int = 1) -> None:
        self.budget_bytes, self.cfg, self.probe_epochs = budget_bytes, cfg, probe_epochs
        self.ratios, self.mask_bits = ratios, mask_bits
        self._fitted: dict[str, Any] | None = None

    def fit(self, model: nn.Module, train_ds: ArrayDataset, val_ds: ArrayDataset, *,
            input_shape: tuple[int, ...], num_classes: int) -> BudgetedSelector:
        self._check()
        for ds in (train_ds, val_ds):
            check_adaptation_data(input_shape, num_classes, ds)
        self._model, self._shape, self._costs = model, tuple(input_shape), {}
        minimal = self._cost(self._scheme({}, 1))
        if self.budget_bytes < minimal:
            raise BudgetError(f"budget_bytes {self.budget_bytes} is below the smallest feasible update (the last "
                              f"layer's bias at batch {self.cfg.batch_size}): {minimal} bytes")
        base_loss = evaluate(model, val_ds)["loss"]
        probe_cfg = dataclasses.replace(self.cfg, epochs=self.probe_epochs, warmup_epochs=0.0)
        candidates = [self._probe(layer, ratio, depth, train_ds, val_ds, base_loss, probe_cfg)
                      for layer, ratio, depth in self._grid(len(weight_layers(model)))]
        scheme, gain = self._checked(self._greedy(candidates), candidates, train_ds, val_ds, base_loss, probe_cfg)
        memory = modelled_memory(prepare(model, scheme), self._shape, self.cfg)
        self._fitted = {"scheme": scheme, "memory": memory, "candidates": candidates, "minimal_bytes": minimal,
                        "gain": gain}
        return self

    def _checked(self, merged: SchemeConfig, candidates: list[Candidate], train_ds: ArrayDataset,
                 val_ds: ArrayDataset, base_loss: float, probe_cfg: TrainConfig) -> tuple[SchemeConfig, float]:
        """Gains do not add up: probe the merged plan too, and keep the best measured plan that fits."""
        fitting = [c for c in candidates if c.cost_bytes <= self.budget_bytes]
        best = max(fitting, key=lambda c: c.gain, default=None)
        merged_gain = self._probe_gain(merged, train_ds, val_ds, base_loss, probe_cfg)
        if best is None or merged_gain >= best.gain:
            return merged, merged_gain
        return self._scheme({} if best.layer is None else {best.layer: best.ratio}, best.bias_layers), best.gain

    def _get(self, key: str) -> Any:
        if self._fitted is None:
            raise NotFittedError(f"BudgetedSelector is not fitted: call fit(model, train_ds, val_ds, ...) before "
                                 f"reading {key}_")
        return self._fitted[key]

    @property
    def scheme_(self) -> SchemeConfig:
        return self._get("scheme")

    @property
    def memory_(self) -> TrainMemoryReport:
        return self._get("memory")

    @property
    def candidates_(self) -> list[Candidate]:
        return self._get("candidates")

    @property
    def minimal_bytes_(self) -> int:
        return self._get("minimal_bytes")

    @property
    def gain_(self) -> float:
        """Validation loss reduction the chosen plan measured in its probe."""
        return self._get("gain")

    def _check(self) -> None:
        if not isinstance(self.budget_bytes, int) or self.budget_bytes < 1:
            raise ConfigError(f"budget_bytes must be an int >= 1, got {self.budget_bytes!r}")
        if not isinstance(self.probe_epochs, int) or self.probe_epochs < 1:
            raise ConfigError(f"probe_epochs must be an int >= 1, got {self.probe_epochs!r}")
        if not self.ratios:
            raise ConfigError("ratios must name at least one channel fraction, got ()")
        for r in self.ratios:
            check_positive("ratios", r)

    def _grid(self, n: int) -> list[tuple[int | None, float, int]]:
        depths = sorted({min(2 ** k, n) for k in range(n.bit_length() + 1)})
        return [(None, 0.0, d) for d in depths] + [(i, r, 1) for i in range(n) for r in self.ratios]

    def _scheme(self, weights: dict[int, float], bias_layers: int) -> SchemeConfig:
        layers = tuple(sorted(weights))
        return SchemeConfig("sparse", layers=layers, layer_ratios=tuple(weights[i] for i in layers),
                            bias_layers=bias_layers, mask_bits=self.mask_bits)

    def _cost(self, scheme: SchemeConfig) -> int:
        key = (scheme.layers, scheme.layer_ratios, scheme.bias_layers)
        if key not in self._costs:
            self._costs[key] = modelled_memory(prepare(self._model, scheme), self._shape, self.cfg).budget_bytes
        return self._costs[key]

    def _probe(self, layer: int | None, ratio: float, depth: int, train_ds: ArrayDataset, val_ds: ArrayDataset,
               base_loss: float, probe_cfg: TrainConfig) -> Candidate:
        scheme = self._scheme({} if layer is None else {layer: ratio}, depth)
        gain = self._probe_gain(scheme, train_ds, val_ds, base_loss, probe_cfg)
        return Candidate(layer, ratio, depth, gain, self._cost(scheme))

    def _probe_gain(self, scheme: SchemeConfig, train_ds: ArrayDataset, val_ds: ArrayDataset, base_loss: float,
                    probe_cfg: TrainConfig) -> float:
        net = prepare(self._model, scheme)
        fit(net, train_ds, probe_cfg, progress=False)
        return base_loss - evaluate(net, val_ds)["loss"]

    def _greedy(self, candidates: list[Candidate]) -> SchemeConfig:
        """Add candidates by gain per byte while the merged update fits the budget."""
        weights: dict[int, float] = {}
        depth = 1
        useful = [c for c in candidates if c.gain > 0]
        for c in sorted(useful, key=lambda c: c.gain / max(c.cost_bytes, 1), reverse=True):
            trial = dict(weights)
            if c.layer is not None:
                trial[c.layer] = max(trial.get(c.layer, 0.0), c.ratio)
            new_depth = max(depth, c.bias_layers)
            if self._cost(self._scheme(trial, new_depth)) <= self.budget_bytes:
                weights, depth = trial, new_depth
        return self._scheme(weights, depth)
