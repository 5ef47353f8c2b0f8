"""Cost estimates for the search stage: every budget of the recipe as a search constraint, screened with the
space's analytic int8 cost (memory) and, for host latency, a latency model fitted to architectures of the
space measured on that target at the precision the pipeline deploys.

The estimates only steer the search; the verify stage measures the chosen model against the real budgets.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from devicefit.core import ArchSpec, ConfigError, read_jsonl

__all__ = ["FLASH_OVERHEAD_BYTES", "SRAM_OVERHEAD_BYTES", "CostModel", "LatencyModel", "build_cost_model",
           "deployed_precision", "fit_latency_model", "measure_model_latency", "sample_specs"]


def deployed_precision(recipe: Any) -> str:
    """The precision a recipe's final model runs in on a host: int8 when it quantizes, else fp32."""
    return "int8" if "compress" in recipe.stages and recipe.compress.quantize == "int8" else "fp32"

# Estimated beyond the analytic int8 figures: code, int32 biases and requantisation tables in flash; stack and
# I/O buffers in SRAM. (ResNet-20 on cortex-m4-256k measured 12.6 KiB of flash and -5 KiB of SRAM beyond the
# analytic figures: the planned arena is smaller than the analytic peak.) The deploy stage measures the truth.
FLASH_OVERHEAD_BYTES = 32 * 1024
SRAM_OVERHEAD_BYTES = 8 * 1024


@dataclass(frozen=True)
class LatencyModel:
    """latency_ms ≈ a · MACs + b · params + c (non-negative, robust fit) for one host target, fitted to
    `samples` ({"spec", "macs", "params", "latency_ms", "cv"}); `loo_rel_error` holds each sample's
    leave-one-out relative error, the model's honest accuracy on architectures it has not seen."""

    target: str
    precision: str
    coef: tuple[float, float, float]
    samples: tuple[dict[str, Any], ...]
    loo_rel_error: tuple[float, ...]

    def predict(self, macs: float, params: float) -> float:
        a, b, c = self.coef
        return a * macs + b * params + c

    def to_dict(self) -> dict[str, Any]:
        err = np.abs(self.loo_rel_error)
        return {"target": self.target, "precision": self.precision, "coef_ms": list(self.coef),
                "terms": ["macs", "params", "constant"], "samples": list(self.samples),
                "loo_rel_error": list(self.loo_rel_error), "loo_median_abs_rel_error": float(np.median(err)),
                "loo_max_abs_rel_error": float(err.max()),
                "method": "non-negative soft-L1 fit of relative error on (MACs, params, 1) over measured random "
                          "architectures; leave-one-out relative error"}


def _robust_fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative coefficients minimising a soft-L1 loss of the *relative* residuals: small and large
    networks weigh alike, and a figure spoiled by a burst of load on a shared machine does not drag the fit."""
    from scipy.optimize import least_squares

    scale = np.maximum(np.abs(x).max(axis=0), 1e-12)  # columns of very different magnitude
    xs = x / scale
    start = np.linalg.lstsq(xs, y, rcond=None)[0].clip(min=1e-9)
    fit = least_squares(lambda c: (xs @ c - y) / y, start, bounds=(0.0, np.inf), loss="soft_l1", f_scale=0.1)
    return np.asarray(fit.x / scale)


def fit_latency_model(target: str, precision: str, samples: Sequence[dict[str, Any]]) -> LatencyModel:
    """Fit `LatencyModel` to measured samples (at least 4)."""
    if len(samples) < 4:
        raise ConfigError(f"a latency model needs at least 4 measured architectures, got {len(samples)}")
    x = np.array([[s["macs"], s["params"], 1.0] for s in samples], dtype=np.float64)
    y = np.array([s["latency_ms"] for s in samples], dtype=np.float64)
    coef = _robust_fit(x, y)
    loo = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        pred = float(x[i] @ _robust_fit(x[keep], y[keep]))
        loo.append(pred / y[i] - 1.0)
    return LatencyModel(target, precision, (float(coef[0]), float(coef[1]), float(coef[2])), tuple(samples),
                        tuple(loo))


def sample_specs(space: Any, n: int, seed: int) -> list[ArchSpec]:
    """`n` distinct architectures that span the space: its smallest and largest, then uniform samples."""
    rng = np.random.default_rng(seed)
    specs = [space.smallest(), space.largest()]
    for _ in range(100 * n):
        if len(specs) >= n:
            break
        s = space.sample(rng)
        if s not in specs:
            specs.append(s)
    return specs[:n]


def measure_model_latency(model: Any, target: Any, precision: str, *, input_shape: tuple[int, ...], repeats: int,
                          sessions: int = 1, seed: int = 0) -> Any:
    """`LatencyResult` of `model` on host `target` at the precision it will be deployed in: fp32, or int8
    (post-training QDQ calibrated on 16 seeded random inputs: latency does not depend on the weights' values,
    so an untrained network measures like the trained one). Median over `sessions` fresh runtime sessions."""
    from devicefit import compress as C
    from devicefit import hardware as H

    with tempfile.TemporaryDirectory(prefix="devicefit-lat-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the spread is recorded with the figure
        if precision == "int8":
            calib = np.random.default_rng(seed).standard_normal((16, *input_shape)).astype(np.float32)
            path = C.PostTrainingQuantizer().calibrate(model, calib, input_shape).save(Path(tmp) / "m.onnx")
            return H.measure_latency(path, target, repeats=repeats, sessions=sessions)
        return H.measure_latency(model, target, input_shape=input_shape, repeats=repeats, sessions=sessions)


def measure_spec_latency(space: Any, spec: ArchSpec, target: Any, precision: str, *, num_classes: int,
                         input_shape: tuple[int, ...], repeats: int, seed: int = 0, sessions: int = 1
                         ) -> dict[str, Any]:
    """Median batch-1 latency of `spec`'s network (fresh weights) on host `target` (`measure_model_latency`)."""
    import torch

    torch.manual_seed(seed)
    model = space.build(spec, num_classes=num_classes, input_shape=input_shape).eval()
    res = measure_model_latency(model, target, precision, input_shape=input_shape, repeats=repeats,
                                sessions=sessions, seed=seed)
    return {"latency_ms": res.median_ms, "cv": res.cv, "sessions": sessions}


@dataclass
class CostModel:
    """Estimates for one recipe: `estimate(spec)` → {constraint name: value}, `constraints` (name, limit),
    `describe` (one entry per constraint: what is estimated and how); `analytic(spec)`: the space's cached
    analytic cost (params, MACs, int8 weight and peak activation bytes) that the estimates use."""

    estimate: Callable[[ArchSpec], dict[str, float]]
    limits: dict[str, float]
    describe: list[dict[str, Any]]
    latency_models: list[LatencyModel]
    analytic: Callable[[ArchSpec], dict[str, Any]]


def _analytic(space: Any, num_classes: int, input_shape: tuple[int, ...]) -> Callable[[ArchSpec], dict[str, Any]]:
    cache: dict[ArchSpec, dict[str, Any]] = {}

    def cost(spec: ArchSpec) -> dict[str, Any]:
        if spec not in cache:
            cache[spec] = space.analytic_cost(spec, num_classes=num_classes, input_shape=input_shape)
        return cache[spec]

    return cost


def _measured_latency_model(path: Path, space: Any, target: Any, precision: str, n: int, seed: int, *,
                            num_classes: int, input_shape: tuple[int, ...], repeats: int,
                            log: Callable[[str], None]) -> LatencyModel:
    """Measure `n` architectures (one JSON line each, appended to `path`, so a killed run keeps what it
    measured), fit the model, re-measure once over 3 fresh sessions every sample the fit misses by more than
    30% (a burst of load on a shared machine spoils single figures), and refit until no single-session sample
    is such an outlier, so a rerun on the same samples measures nothing more."""
    done = {row["spec_json"]: row for row in read_jsonl(path) if "spec_json" in row}  # last line wins
    cost = _analytic(space, num_classes, input_shape)

    def measure(spec: ArchSpec, sessions: int, note: str) -> None:
        c = cost(spec)
        m = measure_spec_latency(space, spec, target, precision, num_classes=num_classes, input_shape=input_shape,
                                 repeats=repeats, seed=seed, sessions=sessions)
        done[spec.to_json()] = {"spec_json": spec.to_json(), "spec": spec.to_dict(), "macs": c["macs"],
                                "params": c["params"], **m}
        with path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(done[spec.to_json()]) + "\n")
        log(f"search: latency {note} on {target.name}: {m['latency_ms']:.3g} ms ({c['macs'] / 1e6:.1f} M MACs)")

    specs = sample_specs(space, n, seed)
    for i, spec in enumerate(specs):
        if spec.to_json() not in done:
            measure(spec, 1, f"sample {i + 1}/{n}")
    while True:  # until no single-session sample is an outlier; each sample is re-measured at most once
        rows = [(s, done[s.to_json()]) for s in specs]
        lm = fit_latency_model(target.name, precision, [r for _, r in rows])
        outliers = [s for s, r in rows if r.get("sessions", 1) == 1
                    and abs(lm.predict(r["macs"], r["params"]) / r["latency_ms"] - 1) > 0.3]
        if not outliers:
            return lm
        for s in outliers:
            measure(s, 3, "re-measurement (3 sessions) of an outlier")


def build_cost_model(space: Any, targets: Sequence[Any], precision: str, stage_dir: Path, *, n_latency: int,
                     latency_margin: float, num_classes: int, input_shape: tuple[int, ...], repeats: int,
                     seed: int, log: Callable[[str], None]) -> CostModel:
    """Constraints `<target>:<budget>` for every budget the search can estimate; a host latency budget gets a
    latency model measured on that target (samples kept in `stage_dir/latency-<target>.jsonl`)."""
    cost = _analytic(space, num_classes, input_shape)
    limits: dict[str, float] = {}
    describe: list[dict[str, Any]] = []
    parts: list[Callable[[ArchSpec], dict[str, float]]] = []
    models: list[LatencyModel] = []
    for t in targets:
        for budget, limit in t.budgets.items():
            name = f"{t.name}:{budget}"
            if budget == "latency_ms" and t.kind == "host":
                lm = _measured_latency_model(stage_dir / f"latency-{t.name}.jsonl", space, t, precision, n_latency,
                                             seed, num_classes=num_classes, input_shape=input_shape, repeats=repeats,
                                             log=log)
                models.append(lm)
                limits[name] = float(limit) * latency_margin
                parts.append(lambda s, n=name, m=lm: {n: m.predict(cost(s)["macs"], cost(s)["params"])})
                describe.append({"name": name, "budget": float(limit), "search_limit": limits[name],
                                 "estimate": f"latency model ({precision}, {len(lm.samples)} measured architectures, "
                                             f"leave-one-out median error "
                                             f"{100 * float(np.median(np.abs(lm.loo_rel_error))):.1f}%), searched "
                                             f"against {latency_margin:g} × the budget"})
            elif budget in ("peak_sram_bytes", "flash_bytes", "model_bytes"):
                key, extra, how = {
                    "peak_sram_bytes": ("peak_activation_bytes_int8", SRAM_OVERHEAD_BYTES,
                                        "analytic int8 peak activations + stack and I/O allowance"),
                    "flash_bytes": ("param_bytes_int8", FLASH_OVERHEAD_BYTES,
                                    "analytic int8 weights + code and bias allowance"),
                    "model_bytes": ("param_bytes_int8", 0, "analytic int8 weights"),
                }[budget]
                limits[name] = float(limit)
                parts.append(lambda s, n=name, k=key, e=extra: {n: float(cost(s)[k] + e)})
                describe.append({"name": name, "budget": float(limit), "search_limit": float(limit),
                                 "estimate": f"{how} ({extra} bytes)" if extra else how})
            else:
                describe.append({"name": name, "budget": float(limit), "search_limit": None,
                                 "estimate": "not estimated during search (checked by the verify stage)"})

    def estimate(spec: ArchSpec) -> dict[str, float]:
        out: dict[str, float] = {}
        for part in parts:
            out |= part(spec)
        return out

    return CostModel(estimate, limits, describe, models, cost)


def utilisation(values: dict[str, float], limits: dict[str, float]) -> float:
    """The largest share of a search limit that `values` use (≤ 1 means every estimate fits)."""
    return max((values[k] / lim for k, lim in limits.items()), default=0.0)
