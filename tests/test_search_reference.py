"""Latency relative to a reference network, timed side by side (`search.ReferenceLatency`): parsing the
reference, expressing it in a latency table's units, and measuring candidates beside it on host-ort."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from devicefit.core import ArchSpec, ConfigError, NotFittedError
from devicefit.search import LatencyTable, LatencyTableConfig, ReferenceLatency, parse_reference
from devicefit.search._latency_table import sample_calibration_specs
from devicefit.space import get_space

SPACE = get_space("mbconv")


def uniform(op: str, width: float = 0.5) -> ArchSpec:
    return ArchSpec("mbconv", {"ops": (op,) * SPACE.n_layers, "widths": (width,) * len(SPACE.stages)})


def test_parse_reference_gives_the_space_layout_or_a_file(tmp_path: Path) -> None:
    assert parse_reference(SPACE, "k3_e6@0.75") == uniform("k3_e6", 0.75)
    onnx = tmp_path / "ref.onnx"
    onnx.write_bytes(b"x")
    assert parse_reference(SPACE, str(onnx)) == onnx
    with pytest.raises(ConfigError, match="no such ONNX file"):
        parse_reference(SPACE, str(tmp_path / "missing.onnx"))
    for bad in ("k3_e6", "skip@0.5", "k9_e6@0.5", "k3_e6@0.6", "k3_e6@wide", ""):
        with pytest.raises(ConfigError, match="reference"):
            parse_reference(SPACE, bad)


def table_with(scale: float, specs: list[ArchSpec], ms: list[float]) -> LatencyTable:
    """A table fitted to given timings × `scale` (no timing: the 'machine at fit' is whatever `ms` says)."""
    cfg = LatencyTableConfig(widths=0.5, repeats=20, warmup=3, holdout=0.0)
    return LatencyTable(cfg).fit(specs, [scale * v for v in ms])


@pytest.mark.slow
def test_reference_latency_is_paired_and_in_the_tables_units(tmp_path: Path) -> None:
    """R follows the table's at-fit figures (a table whose figures are 10× gives a 10× R, the measured ratios
    being paired); a candidate identical to the reference measures about 1× it, a far larger one clearly more;
    what `__call__` returns is the recorded paired ratio × R."""
    specs = sample_calibration_specs(SPACE, (0.5,) * 6, 6, seed=0)
    probe = LatencyTable(LatencyTableConfig(widths=0.5, repeats=20, warmup=3))
    with pytest.raises(NotFittedError):
        ReferenceLatency(probe, tmp_path / "r.onnx")
    ms = [1.0 + i for i in range(len(specs))]  # any positive at-fit figures
    base = table_with(1.0, specs, ms)
    ref = base.export(uniform("k3_e3"), tmp_path / "ref.onnx")
    with pytest.raises(ConfigError, match="rounds must be an int >= 3"):
        ReferenceLatency(base, ref, rounds=2)
    with pytest.raises(ConfigError, match="no such ONNX file"):
        ReferenceLatency(base, tmp_path / "none.onnx")
    timer = ReferenceLatency(base, ref, rounds=5)
    with pytest.raises(NotFittedError, match="calibrate"):
        timer(uniform("k3_e3"))
    r1 = timer.calibrate()
    rows = timer.calibration_
    assert len(rows) == 3 and r1 == pytest.approx(np.median([r["ratio"] * r["at_fit_ms"] for r in rows]))
    r10 = ReferenceLatency(table_with(10.0, specs, ms), ref, rounds=5).calibrate()
    assert 6.0 < r10 / r1 < 16.0  # 10× the at-fit figures, up to the paired ratios' noise

    same = timer(uniform("k3_e3")) / r1
    big = timer(uniform("k7_e6")) / r1
    assert timer.records_[-1]["phase"] == "ratio" and big == pytest.approx(timer.records_[-1]["ratio"])
    assert 0.75 < same < 1.33 and big > 1.3 * same
