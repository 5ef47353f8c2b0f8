"""Side-by-side latency: several models timed in interleaved rounds, so that a change in the machine's speed
(a shared VM drifts by tens of percent within minutes) hits every model alike and their *ratios* hold.

Each model is loaded once (a module is exported once); every round times each model on a fresh runtime
session, in a fresh random order, and keeps the round's median. A model's figure is the median of its round
medians; a ratio between two models is the median of their per-round ratios (paired, so drift cancels).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from devicefit.core import ConfigError, Measurement, machine_info

from ._profile import _RUNTIMES, ModelSource, _check_counts, _host_target, time_runs_ms

__all__ = ["InterleavedLatency", "measure_interleaved"]


@dataclass(frozen=True)
class InterleavedLatency:
    """Round medians (ms) of every model, `rounds_ms[name][i]` from round i; `method` says how they were taken."""

    target: str
    rounds_ms: Mapping[str, tuple[float, ...]]
    method: Mapping[str, Any]

    def median_ms(self, name: str) -> float:
        """The median of `name`'s round medians."""
        return float(np.median(self._rounds(name)))

    def ratio(self, numerator: str, denominator: str) -> float:
        """Median over rounds of numerator / denominator latency (e.g. ratio("before", "after") = speed-up)."""
        return float(np.median(self._rounds(numerator) / self._rounds(denominator)))

    def measurement(self, name: str) -> Measurement:
        """`name`'s figure as a `Measurement` (spread = p10/p90 and cv of its round medians)."""
        r = self._rounds(name)
        spread = {"p10": float(np.percentile(r, 10)), "p90": float(np.percentile(r, 90)),
                  "cv": float(r.std(ddof=1) / r.mean()) if len(r) > 1 else 0.0, "n": len(r)}
        return Measurement("latency", self.median_ms(name), "ms", dict(self.method), spread,
                           {**machine_info(), "threads": self.method["threads"]})

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "median_ms": {k: self.median_ms(k) for k in self.rounds_ms},
                "rounds_ms": {k: list(v) for k, v in self.rounds_ms.items()}, "method": dict(self.method)}

    def _rounds(self, name: str) -> np.ndarray:
        if name not in self.rounds_ms:
            raise ConfigError(f"no model named {name!r} was measured; measured: {', '.join(self.rounds_ms)}")
        return np.asarray(self.rounds_ms[name], dtype=np.float64)


def measure_interleaved(models: Mapping[str, ModelSource], target: str = "host-ort", *,
                        input_shape: Sequence[int] | None = None, rounds: int = 5, repeats: int = 30,
                        warmup: int = 10, threads: int | None = 1, seed: int = 0) -> InterleavedLatency:
    """Time every model of `models` (name -> nn.Module or .onnx path) batch-1 on a host `target`, in
    `rounds` interleaved rounds of `warmup` untimed and `repeats` timed runs each (see the module docstring).
    Errors as `measure_latency`: a non-host target → ConfigError, a model the runtime cannot load or run →
    UnsupportedOpError; an empty `models` → ConfigError."""
    if not models:
        raise ConfigError("models must name at least one model to measure")
    t = _host_target(target)
    n_threads = _check_counts(repeats, warmup, rounds, threads)
    rng = np.random.default_rng(seed)
    names = list(models)
    medians: dict[str, list[float]] = {k: [] for k in names}
    with contextlib.ExitStack() as stack:
        benches = {k: stack.enter_context(_RUNTIMES.get(t.runtime)(models[k], input_shape, n_threads))
                   for k in names}
        for i in range(rounds):
            for k in (names[j] for j in rng.permutation(len(names))):
                b = benches[k]
                run = b.fresh() if b.fresh is not None and i > 0 else b.run
                medians[k].append(float(np.median(time_runs_ms(run, warmup, repeats))))
        runtime = next(iter(benches.values())).method
    method = {"runtime": runtime.get("runtime"), "runtime_version": runtime.get("runtime_version"),
              "threads": n_threads, "rounds": rounds, "repeats": repeats, "warmup": warmup, "batch_size": 1,
              "order": "fresh random order per round, fresh session per round", "figure": "median of round medians",
              "ratio": "median of per-round ratios", "target": t.name}
    result = InterleavedLatency(t.name, {k: tuple(v) for k, v in medians.items()}, method)
    for k in names:
        r = np.asarray(medians[k])
        if len(r) > 2 and r.min() > 0 and r.max() / r.min() > 1.5:
            warnings.warn(f"latency of {k!r} on {t.name} spread {r.max() / r.min():.2f}x across {rounds} rounds; "
                          "the machine may be busy: ratios stay paired, absolute figures are unreliable",
                          RuntimeWarning, stacklevel=2)
    return result
