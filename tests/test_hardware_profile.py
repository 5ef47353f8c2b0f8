"""Profiler: statistics on fixed arrays, host-ort/host-torch latency records, bad input, per-layer latency
and memory. Timing values are never asserted (speed goals are benchmarks, not tests)."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from devicefit.core import ConfigError, DataError, UnsupportedOpError
from devicefit.hardware import _profile
from devicefit.hardware._layers import aggregate_by_block, layer_latencies, scope_module_path
from devicefit.hardware._memory import analytic_peak_activation_bytes, measure_memory
from devicefit.hardware._profile import measure_latency
from devicefit.hardware._stats import summarize_samples
from devicefit.nn import analyze, export_onnx

SHAPE = (3, 16, 16)
FAST = {"repeats": 5, "warmup": 1, "rounds": 1, "threads": 1, "max_cv": 100.0}


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.features = nn.Sequential(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU()),
                                      nn.Sequential(nn.Conv2d(8, 16, 1), nn.ReLU6()))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(self.stem(x))), 1))


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(TinyNet(), SHAPE, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


# --- statistics on fixed arrays ---------------------------------------------------------------------------


def test_stats_on_fixed_samples() -> None:
    s = summarize_samples(np.arange(1.0, 11.0))
    assert (s.n, s.median, s.mean, s.min, s.max) == (10, 5.5, 5.5, 1.0, 10.0)
    assert s.p10 == pytest.approx(1.9) and s.p90 == pytest.approx(9.1)
    assert s.cv == pytest.approx(np.std(np.arange(1.0, 11.0), ddof=1) / 5.5)


def test_stats_flags_wide_spread_as_unstable() -> None:
    tight = summarize_samples([1.0, 1.01, 0.99, 1.0, 1.02], max_cv=0.05)
    wide = summarize_samples([1.0, 1.0, 1.0, 3.0, 0.5], max_cv=0.05)
    assert tight.stable and tight.cv < 0.05
    assert not wide.stable and wide.cv > 0.05
    assert summarize_samples([2.0]).cv == 0.0


def test_stats_rejects_bad_input() -> None:
    with pytest.raises(DataError, match="at least one"):
        summarize_samples([])
    with pytest.raises(DataError, match="non-finite"):
        summarize_samples([1.0, float("nan")])
    with pytest.raises(ConfigError, match="max_cv"):
        summarize_samples([1.0], max_cv=0)


def _fake_timer(monkeypatch: pytest.MonkeyPatch, rounds: list[list[float]]) -> None:
    queue = [np.asarray(r) for r in rounds]
    monkeypatch.setattr(_profile, "time_runs_ms", lambda run, warmup, repeats: queue.pop(0))


def test_unstable_round_is_remeasured(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_timer(monkeypatch, [[1.0, 5.0, 1.0, 1.0], [1.0, 1.01, 0.99, 1.0]])
    r = measure_latency(TinyNet(), "host-torch", input_shape=SHAPE, repeats=4, warmup=0, rounds=3, threads=1)
    assert r.stable and r.warning is None and r.median_ms == 1.0
    assert len(r.samples_ms) == 2 and r.measurement.method["round_used"] == 1


def test_still_unstable_is_flagged_never_silent(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_timer(monkeypatch, [[1.0, 5.0, 1.0, 1.0], [1.0, 3.0, 1.0, 1.0]])
    with pytest.warns(RuntimeWarning, match="spread too wide"):
        r = measure_latency(TinyNet(), "host-torch", input_shape=SHAPE, repeats=4, warmup=0, rounds=2, threads=1)
    assert not r.stable and "cv" in r.warning and r.measurement.method["stable"] is False
    assert r.measurement.method["round_used"] == 1  # the least noisy round
    assert r.to_dict()["stable"] is False


def test_figure_is_the_median_over_fresh_sessions(monkeypatch: pytest.MonkeyPatch, onnx_file: Path) -> None:
    # three sessions: one sits 40% off (as a session can on a shared VM); the median ignores it
    _fake_timer(monkeypatch, [[1.0, 1.0, 1.0], [0.6, 0.6, 0.6], [1.02, 1.02, 1.02]])
    opened = []
    real = _profile.ort_session
    monkeypatch.setattr(_profile, "ort_session", lambda *a, **k: opened.append(1) or real(*a, **k))
    with pytest.warns(RuntimeWarning, match="sessions' figures spread too wide"):
        r = measure_latency(onnx_file, "host-ort", repeats=3, warmup=0, rounds=1, threads=1, sessions=3)
    assert len(opened) == 3  # a fresh ONNX Runtime session per figure
    assert r.session_medians_ms == (1.0, 0.6, 1.02) and r.median_ms == 1.0
    assert r.measurement.value == 1.0 and r.measurement.method["sessions"] == 3
    assert r.measurement.spread["session_max_over_min"] == pytest.approx(1.7)
    assert not r.stable  # 25% between sessions is beyond max_cv: flagged, not hidden
    _fake_timer(monkeypatch, [[1.0, 1.0, 1.0], [1.01, 1.01, 1.01]])
    r = measure_latency(onnx_file, "host-ort", repeats=3, warmup=0, rounds=1, threads=1, sessions=2)
    assert r.stable and r.median_ms == pytest.approx(1.005)
    with pytest.raises(ConfigError, match="sessions"):
        measure_latency(onnx_file, "host-ort", sessions=0)


# --- measuring on host targets ----------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["host-ort", "host-torch"])
def test_measure_tiny_net(target: str) -> None:
    model = TinyNet().train()
    r = measure_latency(model, target, input_shape=SHAPE, **FAST)
    m = r.measurement
    assert r.median_ms > 0 and r.p10_ms <= r.median_ms <= r.p90_ms
    assert (m.name, m.unit, m.value) == ("latency", "ms", r.median_ms)
    assert m.method["threads"] == 1 and m.method["batch_size"] == 1 and m.method["repeats"] == 5
    assert m.method["runtime_version"] and {"p10", "p90", "cv"} <= set(m.spread)
    assert m.machine["cpu_model"] and m.machine["runtime_version"] == m.method["runtime_version"]
    assert model.training  # mode restored
    assert r.to_dict()["measurement"]["value"] == r.median_ms


def test_torch_threads_restored() -> None:
    before = torch.get_num_threads()
    measure_latency(TinyNet(), "host-torch", input_shape=SHAPE, **{**FAST, "threads": 1})
    assert torch.get_num_threads() == before


def test_onnx_path_uses_its_own_input_shape(onnx_file: Path) -> None:
    r = measure_latency(onnx_file, **FAST)
    assert r.median_ms > 0
    assert r.measurement.method["input_shapes"] == {"input": [1, *SHAPE]}
    assert r.measurement.method["opset"] == 17 and r.measurement.method["precision"] == "fp32"
    with pytest.raises(ConfigError, match="does not fit"):
        measure_latency(onnx_file, input_shape=(3, 8, 8), **FAST)


def test_bad_targets_and_arguments(onnx_file: Path) -> None:
    with pytest.raises(ConfigError, match="unknown target"):
        measure_latency(TinyNet(), "host-onnx", input_shape=SHAPE)
    with pytest.raises(ConfigError, match="mcu target"):
        measure_latency(TinyNet(), "cortex-m4-256k", input_shape=SHAPE)
    with pytest.raises(ConfigError, match="input_shape is required"):
        measure_latency(TinyNet(), **FAST)
    with pytest.raises(ConfigError, match=r"host-torch runs an nn\.Module"):
        measure_latency(onnx_file, "host-torch", **FAST)
    with pytest.raises(ConfigError, match="repeats"):
        measure_latency(onnx_file, repeats=1)
    with pytest.raises(ConfigError, match="threads"):
        measure_latency(onnx_file, threads=0)


def test_missing_and_corrupt_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"absent\.onnx does not exist"):
        measure_latency(tmp_path / "absent.onnx", **FAST)
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(b"\x00not a protobuf\xff" * 10)
    with pytest.raises(DataError, match=r"corrupt\.onnx"):
        measure_latency(bad, **FAST)


def _custom_op_model(path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    nodes = [helper.make_node("Relu", ["x"], ["h"], name="relu0"),
             helper.make_node("FancyOp", ["h"], ["y"], name="fancy_node", domain="my.custom")]
    graph = helper.make_graph(nodes, "g", [x], [y])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("my.custom", 1)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=8)  # an IR version every ORT reads
    onnx.save(model, str(path))
    return path


def test_unsupported_op_names_node_and_op(tmp_path: Path) -> None:
    path = _custom_op_model(tmp_path / "custom.onnx")
    with pytest.raises(UnsupportedOpError) as e:
        measure_latency(path, **FAST)
    msg = str(e.value)
    assert "fancy_node" in msg and "my.custom::FancyOp" in msg and "custom.onnx" in msg
    with pytest.raises(UnsupportedOpError, match="FancyOp"):
        layer_latencies(path, repeats=2, warmup=1, threads=1)


def test_runtime_message_naming_a_node_is_used() -> None:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="int_relu")], "g", [], [])
    msg = "Could not find an implementation for Relu(14) node with name 'int_relu'"
    assert _profile._suspect_nodes(helper.make_model(graph), msg) == ["node 'int_relu' (op Relu)"]
    assert _profile._suspect_nodes(helper.make_model(graph), "out of memory") == []


# --- per-layer latency ------------------------------------------------------------------------------------


def test_scope_module_path_from_legacy_names() -> None:
    def path(name: str) -> str | None:
        return scope_module_path(helper.make_node("Conv", ["a"], ["b"], name=name))

    assert path("/features/features.1/conv/conv.0/Conv") == "features.1.conv.0"
    assert path("/3/block/block.0/block.0.0/Conv") == "3.block.0.0"
    assert path("/fc/Gemm") == "fc"
    assert path("/Flatten") == ""
    assert path("ReorderOutput") is None


def test_layer_latencies_cover_every_conv_and_map_to_modules(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the profile JSON must not be left behind
    model = TinyNet()
    prof = layer_latencies(model, input_shape=SHAPE, repeats=3, warmup=1, threads=1)
    with tempfile.TemporaryDirectory() as d:
        exported = onnx.load(str(export_onnx(model, SHAPE, Path(d) / "m.onnx")))
    convs = {n.name for n in exported.graph.node if n.op_type == "Conv"}
    covered = {name for layer in prof for name in layer.onnx_nodes}
    assert convs <= covered
    modules = dict(model.named_modules())
    conv_layers = [layer for layer in prof if layer.onnx_nodes and layer.onnx_nodes[0] in convs]
    assert len(conv_layers) == len(convs)
    assert all(isinstance(modules[layer.module], nn.Conv2d) for layer in conv_layers)
    assert all(layer.median_ms >= 0 and layer.n == 3 for layer in prof)
    assert prof.end_to_end_ms > 0 and prof.sum_of_layers_ms == pytest.approx(sum(x.median_ms for x in prof))
    assert prof.overhead_ms == pytest.approx(prof.end_to_end_ms - prof.sum_of_layers_ms)
    assert list(tmp_path.iterdir()) == []
    blocks = {b.block: b for b in aggregate_by_block(prof, depth=1)}
    assert {"stem", "features", "fc"} <= set(blocks)
    assert blocks["features"].n_layers == 2
    assert sum(b.median_ms for b in blocks.values()) == pytest.approx(prof.sum_of_layers_ms)
    assert {"features.0", "features.1"} <= {b.block for b in aggregate_by_block(prof, depth=2)}


def test_layer_latencies_on_onnx_file(onnx_file: Path) -> None:
    prof = layer_latencies(onnx_file, repeats=2, warmup=1, threads=1)
    assert any(layer.module == "features.1.0" for layer in prof)
    with pytest.raises(ConfigError, match="depth"):
        aggregate_by_block(prof, depth=0)
    with pytest.raises(ConfigError, match="threads"):
        layer_latencies(onnx_file, threads=0)


# --- memory -----------------------------------------------------------------------------------------------


def test_analytic_peak_activation_bytes_is_fp32() -> None:
    model = TinyNet()
    got = analytic_peak_activation_bytes(model, SHAPE)
    assert got > 0 and got == analyze(model, SHAPE, act_bits=32).peak_activation_bytes
    assert analytic_peak_activation_bytes(model, SHAPE, precision="int8") * 4 == got


@pytest.mark.slow
def test_runtime_memory_figure_is_positive() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = measure_memory(TinyNet(), "host-ort", input_shape=SHAPE, threads=1)
    assert report.analytic is not None and report.analytic.value > 0
    rt = report.runtime
    assert rt is not None and rt.value > 0 and rt.unit == "bytes"
    assert "process peak RSS delta" in rt.method["what"] and rt.machine["runtime"] == "onnxruntime"
    assert measure_memory(TinyNet(), "host-torch", input_shape=SHAPE).runtime is None


# --- side-by-side (interleaved) measurement ---------------------------------------------------------------


def test_interleaved_ratio_holds_while_the_machine_drifts(monkeypatch: pytest.MonkeyPatch) -> None:
    from devicefit.hardware import _interleaved, measure_interleaved

    ran: list[str] = []
    models = {}
    for name in ("slow", "fast"):
        models[name] = TinyNet()
        models[name].register_forward_hook(lambda m, i, o, name=name: ran.append(name))
    drift = [1.0, 1.7, 0.8, 1.3, 1.0]  # the machine's speed per round: absolute figures move 1.7/0.8 = 2.1x
    base = {"slow": 2.0, "fast": 1.0}

    def fake(run: object, warmup: int, repeats: int) -> np.ndarray:
        ran.clear()
        run()  # type: ignore[operator]
        i = len(calls) // 2
        calls.append(ran[-1])
        return np.full(repeats, base[ran[-1]] * drift[i])

    calls: list[str] = []
    monkeypatch.setattr(_interleaved, "time_runs_ms", fake)
    with pytest.warns(RuntimeWarning, match="ratios stay paired"):  # the absolute spread is flagged
        r = measure_interleaved(models, "host-torch", input_shape=SHAPE, rounds=5, repeats=3, threads=1)
    assert sorted(calls[0:2]) == sorted(calls[2:4]) == ["fast", "slow"]  # every round times every model
    assert r.ratio("slow", "fast") == pytest.approx(2.0)  # paired: drift cancels exactly
    assert r.rounds_ms["slow"] == pytest.approx(tuple(2.0 * d for d in drift))
    assert r.median_ms("fast") == pytest.approx(1.0)
    assert r.measurement("slow").spread["n"] == 5 and r.to_dict()["method"]["rounds"] == 5
    with pytest.raises(ConfigError, match="no model named 'other'"):
        r.ratio("slow", "other")


def test_interleaved_measures_real_files_and_rejects_bad_input(onnx_file: Path) -> None:
    from devicefit.hardware import measure_interleaved

    r = measure_interleaved({"a": onnx_file, "b": TinyNet()}, "host-ort", input_shape=SHAPE, rounds=2, repeats=5,
                            warmup=1)
    assert all(len(v) == 2 and min(v) > 0 for v in r.rounds_ms.values())
    assert 0.2 < r.ratio("a", "b") < 5  # the same network, exported twice
    with pytest.raises(ConfigError, match="at least one model"):
        measure_interleaved({}, "host-ort")
    with pytest.raises(ConfigError, match="rounds"):
        measure_interleaved({"a": onnx_file}, "host-ort", rounds=0)
    with pytest.raises(ConfigError, match="host"):
        measure_interleaved({"a": onnx_file}, "cortex-m4-256k")
