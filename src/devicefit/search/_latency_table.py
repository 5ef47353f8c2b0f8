"""Additive per-layer latency tables of an MBConv space at fixed stage widths, fitted to end-to-end timings of
whole sampled networks on a host target (so per-node runtime overhead is in them); LightNAS's `LinearCost`.

The nn-Meter / LightNAS practice is an additive predictor LAT(arch) = constant + Σ_layers table[layer, op]. At
fixed stage widths every layer of an MBConv space sees a fixed input shape (the first layer of each stage, the
one that changes shape, is never skipped), so the additive form is exact up to runtime effects; a profiler's
per-node table is not (its overhead inflates the sum), hence this fit to whole-model medians instead.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from devicefit.core import (
    ArchSpec,
    ConfigError,
    DataError,
    NotFittedError,
    atomic_write_json,
    check_choice,
    check_int,
    check_positive,
    check_range,
    machine_info,
    read_json,
)

from ._lightnas import LinearCost

__all__ = ["PRIORS", "TABLE_KIND", "LatencyTable", "LatencyTableConfig", "sample_calibration_specs"]

TABLE_KIND = "devicefit.latency_table"
PRIORS = ("macs", "none")
REFERENCE_OP = "k3_e3"  # gauge of a first-of-stage layer without a prior: its k3_e3 cost lives in the constant

Log = Callable[[str], None]


@dataclass(frozen=True)
class LatencyTableConfig:
    """What the table belongs to and how it is measured and fitted.

    `space` (a registered MBConv space), `widths` (one multiplier per stage, or one number for all), `target`
    (a host target: "host-ort"), `input_shape` (None: the space's), `num_classes`. Calibration: `n_archs`
    sampled networks (plus the smallest and the largest), each exported to ONNX once and timed by
    `measure_latency` (batch 1, fp32, `threads` intra-op threads, `repeats` after `warmup`, median of
    `sessions` fresh sessions) in each of `passes` passes over all networks in a fresh random order; a
    network's figure is the median over passes, so the machine's speed drift is spread over all networks.
    Fit: bounded least squares on relative error (scipy `lsq_linear`); `prior` "macs" fits table = s·MACs + D
    (s >= 0) with the ridge penalty `ridge`·‖D‖² (ms²) pulling the per-entry corrections D toward zero;
    "none" fits every entry freely (ridge toward 0; non-negative, except that a first-of-stage layer's
    entries are differences to its k3_e3 cost, which lives in the constant). `ridge=100` was chosen by
    held-out error on 122 networks timed on a shared 2-core VM (mean relative error 17 % vs 54 % at 0: there
    the timings' own noise dominated); with exact additive data `ridge=0` recovers the table exactly.
    `holdout` (in [0, 1)) of the networks is held out to report the error of a fit on the rest; the final
    table is refitted on all. `seed` fixes the sample and the orders.
    """

    space: str = "mbconv"
    widths: tuple[float, ...] | float = 0.5
    target: str = "host-ort"
    input_shape: tuple[int, ...] | None = None
    num_classes: int = 10
    n_archs: int = 120
    threads: int = 1
    repeats: int = 50
    warmup: int = 10
    sessions: int = 1
    passes: int = 3
    prior: str = "macs"
    ridge: float = 100.0
    holdout: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        space = _mbconv_space(self.space)
        widths = (self.widths,) * len(space.stages) if isinstance(self.widths, int | float) else self.widths
        widths = tuple(float(w) for w in widths)
        if len(widths) != len(space.stages):
            raise ConfigError(f"widths must give one multiplier per stage of {self.space} ({len(space.stages)}), "
                              f"got {len(widths)}")
        object.__setattr__(self, "widths", widths)
        space.validate(_spec(space, tuple(REFERENCE_OP for _ in space.layer_stage()), widths))
        if self.input_shape is not None:
            object.__setattr__(self, "input_shape", tuple(int(v) for v in self.input_shape))
        for name in ("num_classes", "n_archs", "threads", "repeats", "sessions", "passes"):
            check_int(name, getattr(self, name), 1)
        for name in ("warmup", "seed"):
            check_int(name, getattr(self, name))
        check_choice("prior", self.prior, PRIORS)
        check_positive("ridge", self.ridge, allow_zero=True)
        check_range("holdout", self.holdout, 0.0, 1.0, inclusive=True)
        if self.holdout >= 1.0:
            raise ConfigError(f"holdout must be in [0, 1), got {self.holdout!r}")
        if not isinstance(self.target, str) or not self.target:
            raise ConfigError(f"target must be a target name, got {self.target!r}")

    @property
    def stage_widths(self) -> tuple[float, ...]:
        """`widths` as normalised in `__post_init__` (one float per stage)."""
        assert isinstance(self.widths, tuple)
        return self.widths

    def shape(self) -> tuple[int, ...]:
        return tuple(self.input_shape or _mbconv_space(self.space).input_shape)


@dataclass
class _Design:
    """Columns of the fit: which (layer, op) entries are free, the prior table, and bounds."""

    free: list[tuple[int, int]]
    prior: np.ndarray  # (layers, ops) prior cost, 0 where unused
    use_prior: bool
    firsts: list[bool]
    lower: np.ndarray = field(default_factory=lambda: np.zeros(0))


class LatencyTable:
    """Estimator: `LatencyTable(config)` stores; `fit()` samples and times the calibration networks and fits
    the table (or `fit(specs, latencies_ms)` fits given timings, no measuring); returns self.

    Learned: `constant_ms_`, `table_ms_` ((layers, len(MBCONV_OPS)) ms; skip 0, impossible NaN), `specs_`
    and `measured_ms_` (the calibration networks and their timings, median over passes), `pass_ms_`
    ((passes, networks) ms), `holdout_` (errors of a fit on the other networks, measured on
    the held-out ones: mean/median/max relative error and count), `train_error_` (the final fit on its own
    data), `scale_` (ms per MAC of the prior, 0 without one). `cost()` gives LightNAS's `LinearCost`,
    `predict(spec)` the table's ms, `range_ms()` the cheapest and dearest network, `save(path)` / `load(path,
    ...)` a JSON file that carries the space, widths and target it belongs to.
    """

    def __init__(self, config: LatencyTableConfig) -> None:
        self.config = config

    # -- fitting ------------------------------------------------------------------------------------

    def fit(self, specs: Sequence[ArchSpec] | None = None, latencies_ms: Sequence[float] | None = None, *,
            log: Log | None = None) -> LatencyTable:
        """Time `config.n_archs` sampled networks (when `specs` is None) or fit the given timings (ms)."""
        cfg, space = self.config, _mbconv_space(self.config.space)
        if specs is None:
            specs = sample_calibration_specs(space, cfg.stage_widths, cfg.n_archs, cfg.seed)
            passes = self._measure(space, list(specs), log)
            y = np.median(passes, axis=0)
        else:
            if latencies_ms is None or len(latencies_ms) != len(specs):
                raise ConfigError(f"latencies_ms must give one timing per spec ({len(specs)}), got "
                                  f"{None if latencies_ms is None else len(latencies_ms)}")
            y = np.asarray(latencies_ms, dtype=np.float64)
            passes = y[None]
        specs = [self._check_spec(space, s) for s in specs]
        if not np.all(np.isfinite(y)) or np.any(y <= 0):
            raise DataError("latencies_ms must be finite and > 0")
        onehot = np.stack([_onehot(space, s) for s in specs])
        design = self._design(space)
        self.holdout_ = self._holdout(onehot, y, design)
        self.constant_ms_, self.table_ms_, self.scale_ = _solve(onehot, y, design, cfg.ridge)
        self.train_error_ = _errors(self._predict_onehot(onehot), y)
        self.specs_, self.measured_ms_, self.pass_ms_ = specs, y, passes
        return self

    def _measure(self, space: Any, specs: list[ArchSpec], log: Log | None) -> np.ndarray:
        """(passes, networks) ms: every network exported once, then timed once per pass in a fresh order."""
        cfg = self.config
        rng = np.random.default_rng(cfg.seed + 2)
        out = np.zeros((cfg.passes, len(specs)))
        with tempfile.TemporaryDirectory(prefix="devicefit-lat-table-") as tmp:
            paths = [self.export(spec, Path(tmp) / f"net{i}.onnx", space) for i, spec in enumerate(specs)]
            for p in range(cfg.passes):
                for i in rng.permutation(len(specs)):
                    out[p, i] = self.time_onnx(paths[i])
                if log is not None:
                    log(f"latency table: pass {p + 1}/{cfg.passes} over {len(specs)} networks done")
        return out

    def export(self, spec: ArchSpec, path: str | Path, space: Any = None) -> Path:
        """`spec` built at the table's input shape and classes (untrained: latency does not depend on the
        weights) and exported to ONNX at `path`."""
        from devicefit.nn import export_onnx

        cfg = self.config
        space = space or _mbconv_space(cfg.space)
        net = space.build(spec, num_classes=cfg.num_classes, input_shape=cfg.shape()).eval()
        return export_onnx(net, cfg.shape(), Path(path))  # type: ignore[no-any-return]

    def time_spec(self, spec: ArchSpec, times: int = 3) -> float:
        """Median ms of `times` `time_onnx` timings of `spec` exported by `export` (a temporary file)."""
        with tempfile.TemporaryDirectory(prefix="devicefit-lat-spec-") as tmp:
            path = self.export(spec, Path(tmp) / "net.onnx")
            return float(np.median([self.time_onnx(path) for _ in range(times)]))

    def time_onnx(self, path: str | Path) -> float:
        """Median ms of one `.onnx` file on the config's target and settings (`sessions` fresh sessions)."""
        from devicefit.hardware import measure_latency  # layer 3, imported lazily (torch/onnxruntime)

        cfg = self.config
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an unstable figure is still the median; see passes
            r = measure_latency(path, cfg.target, input_shape=cfg.shape(), repeats=cfg.repeats, warmup=cfg.warmup,
                                threads=cfg.threads, sessions=cfg.sessions)
        return float(r.median_ms)

    def _holdout(self, onehot: np.ndarray, y: np.ndarray, design: _Design) -> dict[str, float]:
        cfg = self.config
        n_out = round(cfg.holdout * len(y))
        if n_out == 0 or len(y) - n_out < 2:
            return {"n": 0}
        perm = np.random.default_rng(cfg.seed + 1).permutation(len(y))
        test, train = perm[:n_out], perm[n_out:]
        c, t, _ = _solve(onehot[train], y[train], design, cfg.ridge)
        pred = c + (onehot[test] * np.nan_to_num(t)).sum(axis=(1, 2))
        return _errors(pred, y[test]) | {"n_fit": len(train)}

    def _design(self, space: Any) -> _Design:
        from devicefit.space import MBCONV_OPS

        cfg = self.config
        use_prior = cfg.prior == "macs"
        prior = np.zeros((space.n_layers, len(MBCONV_OPS)))
        if use_prior:
            from devicefit.space._mbconv_cost import mbconv_cost_table

            _, macs = mbconv_cost_table(space, cfg.stage_widths, metric="macs", num_classes=cfg.num_classes,
                                        input_shape=cfg.shape())
            prior = np.nan_to_num(macs)
        ref = MBCONV_OPS.index(REFERENCE_OP)
        free = []
        for i, (_, first) in enumerate(space.layer_stage()):
            for j, op in enumerate(MBCONV_OPS):
                if op == "skip" or (first and j == ref and not use_prior):
                    continue
                free.append((i, j))
        # with the prior, entries are corrections (any sign); without, first-of-stage entries are differences
        # to the reference op (any sign) and the others costs (>= 0)
        firsts = {i for i, (_, f) in enumerate(space.layer_stage()) if f}
        lower = np.array([-np.inf if (use_prior or i in firsts) else 0.0 for i, _ in free])
        return _Design(free, prior, use_prior, [f for _, f in space.layer_stage()], lower)

    # -- use ----------------------------------------------------------------------------------------

    def predict(self, spec: ArchSpec) -> float:
        """The table's latency (ms) of `spec` (validated; its widths must be the table's)."""
        self._fitted()
        space = _mbconv_space(self.config.space)
        return float(self._predict_onehot(_onehot(space, self._check_spec(space, spec))[None])[0])

    def _predict_onehot(self, onehot: np.ndarray) -> np.ndarray:
        out: np.ndarray = self.constant_ms_ + (onehot * np.nan_to_num(self.table_ms_)).sum(axis=(1, 2))
        return out

    def cost(self) -> LinearCost:
        """LightNAS's differentiable cost (ms) over the (layers, ops) one-hot."""
        self._fitted()
        return LinearCost(self.constant_ms_, self.table_ms_)

    def range_ms(self) -> tuple[float, float]:
        """(cheapest, dearest) predicted latency over every op choice at the table's widths."""
        self._fitted()
        t = self.table_ms_
        lo = np.where(np.isnan(t), np.inf, t).min(axis=1).sum()
        hi = np.where(np.isnan(t), -np.inf, t).max(axis=1).sum()
        return self.constant_ms_ + float(lo), self.constant_ms_ + float(hi)

    def check_matches(self, space: str, widths: Sequence[float] | float, target: str) -> None:
        """ConfigError naming the first of space / widths / target that differs from the table's."""
        for name, want in (("space", space), ("target", target)):
            if want != getattr(self.config, name):
                raise ConfigError(f"latency table is for {name} {getattr(self.config, name)!r}, but {name} "
                                  f"{want!r} was asked for")
        want_w = LatencyTableConfig(space=space, widths=_widths_arg(widths), target=target).stage_widths
        if want_w != self.config.stage_widths:
            raise ConfigError(f"latency table is for widths {self.config.stage_widths}, but widths {want_w} were "
                              "asked for")

    # -- persistence --------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        from devicefit.space import MBCONV_OPS

        self._fitted()
        table = [[None if math.isnan(v) else v for v in row] for row in self.table_ms_.tolist()]
        return {"kind": TABLE_KIND, "version": 1, "space": self.config.space,
                "widths": list(self.config.stage_widths),
                "target": self.config.target, "input_shape": list(self.config.shape()), "ops": list(MBCONV_OPS),
                "config": asdict(self.config), "constant_ms": self.constant_ms_, "table_ms": table,
                "scale_ms_per_mac": self.scale_, "holdout": self.holdout_, "train_error": self.train_error_,
                "calibration": [{"ops": list(s["ops"]), "measured_ms": float(m), "pass_ms": [float(v) for v in p]}
                                for s, m, p in zip(self.specs_, self.measured_ms_, self.pass_ms_.T, strict=True)],
                "machine": machine_info()}

    def save(self, path: str | Path) -> Path:
        """Write the table as JSON (atomically)."""
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path, *, space: str | None = None, widths: Sequence[float] | float | None = None,
             target: str | None = None) -> LatencyTable:
        """Read a saved table; with `space` / `widths` / `target`, refuse (ConfigError) one for other ones.
        Missing or corrupt file → DataError."""
        from devicefit.space import MBCONV_OPS

        doc = read_json(path)
        if not isinstance(doc, dict) or doc.get("kind") != TABLE_KIND:
            raise DataError(f"{path}: not a latency table (kind {TABLE_KIND!r} expected)")
        try:
            cfg_doc = dict(doc["config"])
            cfg_doc["widths"] = tuple(cfg_doc["widths"])
            if cfg_doc.get("input_shape") is not None:
                cfg_doc["input_shape"] = tuple(cfg_doc["input_shape"])
            out = cls(LatencyTableConfig(**cfg_doc))
            table = np.array([[math.nan if v is None else float(v) for v in row] for row in doc["table_ms"]])
            out.constant_ms_, out.table_ms_ = float(doc["constant_ms"]), table
            out.scale_, out.holdout_, out.train_error_ = doc["scale_ms_per_mac"], doc["holdout"], doc["train_error"]
            sp = _mbconv_space(out.config.space)
            cal = doc["calibration"]
            out.specs_ = [_spec(sp, tuple(c["ops"]), out.config.stage_widths) for c in cal]
            out.measured_ms_ = np.array([c["measured_ms"] for c in cal], dtype=np.float64)
            out.pass_ms_ = np.array([c["pass_ms"] for c in cal], dtype=np.float64).T
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{path}: corrupt latency table ({type(exc).__name__}: {exc})") from exc
        if tuple(doc.get("ops", ())) != MBCONV_OPS or table.shape != (sp.n_layers, len(MBCONV_OPS)):
            raise DataError(f"{path}: table shape {table.shape} / ops {doc.get('ops')} do not match space "
                            f"{sp.name} ({sp.n_layers} layers, ops {list(MBCONV_OPS)})")
        if space is not None or widths is not None or target is not None:
            out.check_matches(space or out.config.space, out.config.stage_widths if widths is None else widths,
                              target or out.config.target)
        return out

    # -- helpers ------------------------------------------------------------------------------------

    def _check_spec(self, space: Any, spec: ArchSpec) -> ArchSpec:
        spec = space.validate(spec)
        if tuple(spec["widths"]) != self.config.stage_widths:
            raise ConfigError(f"spec widths {tuple(spec['widths'])} differ from the latency table's "
                              f"{self.config.stage_widths}")
        return spec

    def _fitted(self) -> None:
        if not hasattr(self, "table_ms_"):
            raise NotFittedError("LatencyTable is not fitted; call fit() or LatencyTable.load(path)")


def sample_calibration_specs(space: Any, widths: Sequence[float], n: int, seed: int) -> list[ArchSpec]:
    """The smallest and the largest network, then `n` random ones spanning the range: per network a keep
    probability d ~ U(0, 1); each skippable layer is kept with probability d, kept layers take a uniform op."""
    from devicefit.space import MBCONV_OPS

    rng = np.random.default_rng(seed)
    first = [f for _, f in space.layer_stage()]
    ops = [o for o in MBCONV_OPS if o != "skip"]
    specs = [_spec(space, tuple(REFERENCE_OP if f else "skip" for f in first), widths),
             _spec(space, tuple(ops[-1] for _ in first), widths)]
    for _ in range(n):
        d = rng.random()
        chosen = tuple(ops[int(rng.integers(len(ops)))] if (f or rng.random() < d) else "skip" for f in first)
        specs.append(_spec(space, chosen, widths))
    return specs


def _solve(onehot: np.ndarray, y: np.ndarray, design: _Design, ridge: float) -> tuple[float, np.ndarray, float]:
    """Bounded weighted least squares on relative error: (constant ms, (layers, ops) table, prior scale)."""
    from scipy.optimize import lsq_linear  # type: ignore[import-untyped]

    cols = [np.ones(len(y))]
    if design.use_prior:
        cols.append((onehot * design.prior).sum(axis=(1, 2)))
    cols += [onehot[:, i, j] for i, j in design.free]
    x = np.stack(cols, axis=1) / y[:, None]  # rows weighted by 1/y: relative error
    n_head = 2 if design.use_prior else 1
    if ridge > 0:
        pen = np.zeros((len(design.free), x.shape[1]))
        pen[:, n_head:] = math.sqrt(ridge) * np.eye(len(design.free))
        x, rhs = np.vstack([x, pen]), np.concatenate([np.ones(len(y)), np.zeros(len(design.free))])
    else:
        rhs = np.ones(len(y))
    lower = np.concatenate([[-np.inf], [0.0] if design.use_prior else [], design.lower])
    sol = lsq_linear(x, rhs, bounds=(lower, np.full(len(lower), np.inf)), lsmr_tol="auto", tol=1e-12,
                     max_iter=10000).x
    scale = float(sol[1]) if design.use_prior else 0.0
    table = scale * design.prior.copy()
    for (i, j), v in zip(design.free, sol[n_head:], strict=True):
        table[i, j] += v
    table = _mask_table(table, design)
    return float(sol[0]), table, scale


def _mask_table(table: np.ndarray, design: _Design) -> np.ndarray:
    """Skip column: 0 where a layer may be skipped, NaN in first-of-stage layers (impossible)."""
    out = table.copy()
    out[:, -1] = [math.nan if f else 0.0 for f in design.firsts]
    return out


def _errors(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    rel = np.abs(pred / y - 1.0)
    return {"n": len(y), "mean_rel_error": float(rel.mean()), "median_rel_error": float(np.median(rel)),
            "max_rel_error": float(rel.max()), "rmse_rel": float(np.sqrt((rel ** 2).mean()))}


def _onehot(space: Any, spec: ArchSpec) -> np.ndarray:
    from devicefit.space import MBCONV_OPS

    out = np.zeros((space.n_layers, len(MBCONV_OPS)))
    out[np.arange(space.n_layers), [MBCONV_OPS.index(o) for o in spec["ops"]]] = 1.0
    return out


def _spec(space: Any, ops: tuple[str, ...], widths: Sequence[float]) -> ArchSpec:
    spec: ArchSpec = space.validate(ArchSpec(space.name, {"ops": tuple(ops), "widths": tuple(widths)}))
    return spec


def _widths_arg(widths: Sequence[float] | float) -> tuple[float, ...] | float:
    return float(widths) if isinstance(widths, int | float) else tuple(float(w) for w in widths)


def _mbconv_space(name: str) -> Any:
    from devicefit.space import MBConvSpace, get_space

    space = get_space(name)
    if not isinstance(space, MBConvSpace):
        raise ConfigError(f"latency tables need an MBConv space, got space {name!r}")
    return space
