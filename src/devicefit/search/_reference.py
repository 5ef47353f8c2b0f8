"""A latency target stated relative to a reference network and checked side by side: "0.8 × MobileNetV2-0.75 on
this target". On a machine whose speed drifts (a shared VM moved 1.3× within one LightNAS run, and 0.7-1.6×
within 15 minutes on another afternoon), an absolute target in ms cannot be checked to ±5 %: the same network
measures differently an hour later. A ratio to a reference timed in the same interleaved rounds can, because
a change in speed hits both networks alike (`hardware.measure_interleaved`, the way `devicefit prune --speedup`
checks its goal).

`ReferenceLatency(table, reference_onnx)` connects such a target to a latency table, whose entries are ms as
timed when the table was fitted:
- `calibrate()` expresses the reference in the table's units once: R = the median, over `n_calibration` of the
  table's calibration networks spread over its range, of (reference / calibration network, paired ratio over
  `rounds` interleaved rounds) × that network's ms at the table's fit. A target ratio r becomes T = r · R.
- `__call__(spec)` (LightNAS's `measure`) times `spec` beside the reference and returns paired ratio × R: the
  spec's latency in the table's units, so measured / T = paired ratio / r, free of the machine's drift.
- `ratio(onnx)` times a file beside the reference: the verification of a search's result.
Every timing is recorded in `records_`. `parse_reference` turns "op@width" into the space's network with every
layer `op` at stage width `width` ("k3_e6@0.75": the space's MobileNetV2 layout at width 0.75).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from devicefit.core import ArchSpec, ConfigError, NotFittedError, check_int

from ._latency_table import LatencyTable

__all__ = ["ReferenceLatency", "parse_reference"]


def parse_reference(space: Any, reference: str) -> ArchSpec | Path:
    """`reference` as given by a user: a path to an existing `.onnx` file (returned as a Path), or "op@width" with
    an op of the space other than skip and one of its stage widths (returned as the space's spec with that op in
    every layer at that width in every stage). Anything else → ConfigError naming what was expected."""
    from devicefit.space import MBCONV_OPS, WIDTH_CHOICES

    if not isinstance(reference, str) or not reference:
        raise ConfigError(f"reference must be an .onnx path or 'op@width', got {reference!r}")
    if reference.endswith(".onnx"):
        path = Path(reference)
        if not path.is_file():
            raise ConfigError(f"reference {reference!r}: no such ONNX file")
        return path
    op, sep, width = reference.partition("@")
    ops = [o for o in MBCONV_OPS if o != "skip"]
    try:
        w = float(width)
    except ValueError:
        w = -1.0
    if not sep or op not in ops or w not in WIDTH_CHOICES:
        raise ConfigError(f"reference {reference!r}: expected an .onnx file or 'op@width' with op one of {ops} "
                          f"and width one of {list(WIDTH_CHOICES)} (e.g. 'k3_e6@0.75', the space's MobileNetV2 "
                          "layout at width 0.75)")
    return space.validate(ArchSpec(space.name, {"ops": (op,) * space.n_layers, "widths": (w,) * len(space.stages)}))


class ReferenceLatency:
    """See the module. `table` a fitted `LatencyTable` (its target, input shape, threads, repeats and warm-up
    runs are used for every timing); `reference` an ONNX file; `rounds` interleaved rounds per measurement (≥ 3:
    a paired ratio needs a median over rounds); `n_calibration` table networks to express the reference in the
    table's units (≥ 1); `seed` the rounds' orders. Learned by `calibrate()`: `reference_ms_` (R) and
    `calibration_` (per network: index, at-fit ms, paired ratio)."""

    def __init__(self, table: LatencyTable, reference: str | Path, *, rounds: int = 7, n_calibration: int = 3,
                 seed: int = 0) -> None:
        if not hasattr(table, "table_ms_"):
            raise NotFittedError("the latency table is not fitted; fit or load it first")
        check_int("rounds", rounds, 3)
        check_int("n_calibration", n_calibration, 1)
        self.reference = Path(reference)
        if not self.reference.is_file():
            raise ConfigError(f"reference {str(reference)!r}: no such ONNX file")
        self.table, self.rounds, self.n_calibration, self.seed = table, rounds, n_calibration, seed
        self.records_: list[dict[str, Any]] = []

    def calibrate(self) -> float:
        """Time the reference beside `n_calibration` of the table's calibration networks; set and return R (ms,
        the table's units)."""
        t = self.table
        order = np.argsort(t.measured_ms_)
        n = min(self.n_calibration, len(order))
        picks = sorted({int(order[round(q)]) for q in np.linspace(0, len(order) - 1, n + 2)[1:-1]})
        with tempfile.TemporaryDirectory(prefix="devicefit-ref-") as tmp:
            models: dict[str, Any] = {"reference": self.reference}
            for i in picks:
                models[f"calib-{i}"] = t.export(t.specs_[i], Path(tmp) / f"calib-{i}.onnx")
            m = self._time(models)
        rows = [{"index": i, "at_fit_ms": float(t.measured_ms_[i]), "ratio": m.ratio("reference", f"calib-{i}"),
                 "now_ms": m.median_ms(f"calib-{i}")} for i in picks]
        self.calibration_ = rows
        self.reference_ms_ = float(np.median([r["ratio"] * r["at_fit_ms"] for r in rows]))
        self.records_.append({"phase": "calibrate", "reference_now_ms": m.median_ms("reference"),
                              "reference_ms": self.reference_ms_, "networks": rows})
        return self.reference_ms_

    def ratio(self, onnx: str | Path, label: str = "", rounds: int | None = None) -> float:
        """Paired latency ratio of the ONNX file `onnx` to the reference (median over `rounds` interleaved rounds,
        default the instance's)."""
        m = self._time({"candidate": Path(onnx), "reference": self.reference}, rounds)
        r = m.ratio("candidate", "reference")
        self.records_.append({"phase": "ratio", "label": label, "ratio": r,
                              "candidate_ms": m.median_ms("candidate"), "reference_now_ms": m.median_ms("reference"),
                              "rounds_ms": {k: list(v) for k, v in m.rounds_ms.items()}})
        return r

    def __call__(self, spec: ArchSpec) -> float:
        """`spec` (of the table's space) timed beside the reference: paired ratio × R, in the table's units."""
        if not hasattr(self, "reference_ms_"):
            raise NotFittedError("ReferenceLatency is not calibrated; call calibrate() first")
        with tempfile.TemporaryDirectory(prefix="devicefit-ref-") as tmp:
            path = self.table.export(spec, Path(tmp) / "candidate.onnx")
            return self.ratio(path, label=",".join(spec["ops"])) * self.reference_ms_

    def _time(self, models: dict[str, Any], rounds: int | None = None) -> Any:
        import warnings

        from devicefit.hardware import measure_interleaved  # layer below, imported lazily (onnxruntime)

        cfg = self.table.config
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a drifting machine is why the ratio is paired
            return measure_interleaved(models, cfg.target, input_shape=cfg.shape(), rounds=rounds or self.rounds,
                                       repeats=cfg.repeats, warmup=cfg.warmup, threads=cfg.threads,
                                       seed=self.seed + len(self.records_))
