"""Batch-1 latency of an `nn.Module` or an `.onnx` file on a host target (ONNX Runtime or eager PyTorch).

Export, warm-up, timed repeats in rounds at a fixed thread count; the result carries its spread and the
machine, and a figure whose spread is too wide is flagged with a warning, never quietly reported.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from devicefit.core import ConfigError, DataError, Measurement, Registry, UnsupportedOpError, check_int, machine_info
from devicefit.nn import export_onnx

from ._stats import SampleStats, summarize_samples
from ._target import Target, get_target, list_targets

__all__ = ["LatencyResult", "OnnxModel", "measure_latency", "onnx_model", "ort_session", "resolve_threads",
           "usable_threads"]

SEED = 0
ModelSource = nn.Module | str | os.PathLike[str]

_QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger",
              "DynamicQuantizeLinear"}
_ORT_DOMAINS = {"com.microsoft", "com.microsoft.nchwc", "com.microsoft.experimental"}


def usable_threads() -> int:
    """CPU cores this process may run on (its affinity mask), the default thread count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# --- ONNX models ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OnnxModel:
    """An ONNX file ready to run: its path, proto, input specs (name → (shape with batch 1, numpy dtype)),
    opset of the default domain, precision ("int8" if it holds quantization ops) and the exporter used."""

    path: Path
    proto: onnx.ModelProto
    inputs: dict[str, tuple[tuple[int, ...], np.dtype]]
    opset: int | None
    precision: str
    exporter: str | None

    def random_feeds(self, seed: int = SEED) -> dict[str, np.ndarray]:
        """Inputs drawn from N(0, 1) (integers: zeros) with a fixed seed."""
        rng = np.random.default_rng(seed)
        return {name: rng.standard_normal(shape).astype(dt) if np.issubdtype(dt, np.floating)
                else np.zeros(shape, dtype=dt) for name, (shape, dt) in self.inputs.items()}


def _load_proto(path: Path) -> onnx.ModelProto:
    if not path.is_file():
        raise DataError(f"ONNX model {path} does not exist")
    try:
        return onnx.load(str(path))
    except Exception as e:  # protobuf raises DecodeError and others on corrupt bytes
        raise DataError(f"ONNX model {path} cannot be read (corrupt or not ONNX): {e}") from None


def _input_specs(proto: onnx.ModelProto, input_shape: tuple[int, ...] | None, path: Path) -> dict[str, Any]:
    inits = {i.name for i in proto.graph.initializer}
    graph_inputs = [i for i in proto.graph.input if i.name not in inits]
    if input_shape is not None and len(graph_inputs) != 1:
        raise ConfigError(f"input_shape applies to a model with one input; {path.name} has {len(graph_inputs)}")
    return {i.name: _one_input(i, input_shape, path) for i in graph_inputs}


def _one_input(vi: onnx.ValueInfoProto, input_shape: tuple[int, ...] | None, path: Path) -> tuple[Any, np.dtype]:
    t = vi.type.tensor_type
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type))
    dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    if input_shape is not None:
        fixed = dims[1:]
        if len(fixed) != len(input_shape) or any(f not in (None, s) for f, s in zip(fixed, input_shape, strict=False)):
            raise ConfigError(f"input_shape {input_shape} does not fit input {vi.name!r} of {path.name} "
                              f"(dims {dims}, batch first)")
        return (1, *input_shape), dtype
    if any(d is None for d in dims[1:]):
        raise ConfigError(f"input {vi.name!r} of {path.name} has symbolic dims {dims}; pass input_shape")
    return (1, *dims[1:]) if dims else (), dtype


def _precision(proto: onnx.ModelProto, inputs: dict[str, Any]) -> str:
    if any(n.op_type in _QUANT_OPS for n in proto.graph.node):
        return "int8"
    kinds = {np.dtype(dt).name for _, dt in inputs.values()}
    return {"float16": "fp16"}.get(next(iter(kinds), ""), "fp32")


def _opset(proto: onnx.ModelProto) -> int | None:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)


def _check_input_shape(input_shape: Sequence[int] | None) -> tuple[int, ...] | None:
    if input_shape is None:
        return None
    shape = tuple(input_shape) if isinstance(input_shape, Sequence) and not isinstance(input_shape, str) else ()
    if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise ConfigError(f"input_shape must be a sequence of positive ints without the batch dim, got {input_shape!r}")
    return shape


@contextlib.contextmanager
def onnx_model(src: ModelSource, input_shape: Sequence[int] | None = None) -> Iterator[OnnxModel]:
    """Yield `src` as an `OnnxModel`: a module is exported (legacy exporter) into a temp dir deleted on exit;
    a path is used as is (input shape from the file unless `input_shape` is given; missing/corrupt → DataError)."""
    shape = _check_input_shape(input_shape)
    with tempfile.TemporaryDirectory(prefix="devicefit-onnx-") as tmp:
        exporter = None
        if isinstance(src, nn.Module):
            if shape is None:
                raise ConfigError(f"input_shape is required to measure an nn.Module ({type(src).__name__})")
            path, exporter = export_onnx(src, shape, Path(tmp) / "model.onnx"), "legacy"
        elif isinstance(src, str | os.PathLike):
            path = Path(src)
        else:
            raise ConfigError(f"model must be an nn.Module or a path to an .onnx file, got {type(src).__name__}")
        proto = _load_proto(path)
        inputs = _input_specs(proto, shape, path)
        yield OnnxModel(path, proto, inputs, _opset(proto), _precision(proto, inputs), exporter)


# --- ONNX Runtime sessions --------------------------------------------------------------------------------


def _suspect_nodes(proto: onnx.ModelProto, message: str) -> list[str]:
    """Nodes named in the runtime's message, else nodes of an op it names that has no ONNX/ORT schema."""
    named = re.findall(r"node with name '([^']+)'", message)
    by_name = {n.name: n for n in proto.graph.node}
    nodes = [by_name[x] for x in named if x in by_name]
    if not nodes:  # only blame schema-less ops that the message itself mentions
        nodes = [n for n in proto.graph.node if n.op_type in message
                 and n.domain not in _ORT_DOMAINS and not onnx.defs.has(n.op_type, n.domain or "")]
    return [f"node {n.name or '(unnamed)'!r} (op {(n.domain + '::') if n.domain else ''}{n.op_type})" for n in nodes]


def _unsupported(model: OnnxModel, stage: str, err: Exception) -> UnsupportedOpError:
    msg = " ".join(str(err).split())[:600]
    suspects = _suspect_nodes(model.proto, msg)
    where = f" at {', '.join(suspects[:5])}" if suspects else ""
    return UnsupportedOpError(f"ONNX Runtime {ort.__version__} cannot {stage} {model.path.name}{where}: {msg}")


def session_options(threads: int, **extra: Any) -> ort.SessionOptions:
    """Deployment settings: `threads` intra-op threads, 1 inter-op, sequential, full graph optimisation."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only; the exception carries the message
    for key, value in extra.items():
        setattr(so, key, value)
    return so


def ort_session(model: OnnxModel, threads: int, **extra_options: Any) -> ort.InferenceSession:
    """A CPU session for `model`; a load failure (e.g. an op the runtime lacks) → `UnsupportedOpError`."""
    try:
        return ort.InferenceSession(str(model.path), session_options(threads, **extra_options),
                                    providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises pybind Fail/InvalidGraph/NotImplemented...
        raise _unsupported(model, "load", e) from e


def ort_runner(model: OnnxModel, session: ort.InferenceSession) -> Callable[[], None]:
    """A zero-argument batch-1 run on fixed random inputs; runs once now so a run failure surfaces here."""
    feeds = model.random_feeds()

    def run() -> None:
        session.run(None, feeds)

    try:
        run()
    except Exception as e:
        raise _unsupported(model, "run", e) from e
    return run


# --- runtimes (registered, not switched) ------------------------------------------------------------------


@dataclass
class _Bench:
    """`run`: one inference; `fresh()`: a run on a new runtime session (ORT sessions differ from one
    another by several percent on a shared VM: memory placement, thread pinning)."""

    run: Callable[[], None]
    method: dict[str, Any] = field(default_factory=dict)
    fresh: Callable[[], Callable[[], None]] | None = None


_RUNTIMES: Registry[Callable[..., contextlib.AbstractContextManager[_Bench]]] = Registry("latency runtime")


@_RUNTIMES.register("onnxruntime")
@contextlib.contextmanager
def _ort_bench(src: ModelSource, input_shape: Sequence[int] | None, threads: int) -> Iterator[_Bench]:
    with onnx_model(src, input_shape) as model:
        run = ort_runner(model, ort_session(model, threads))
        yield _Bench(run, fresh=lambda: ort_runner(model, ort_session(model, threads)), method={
            "runtime": "onnxruntime", "runtime_version": ort.__version__, "provider": "CPUExecutionProvider",
            "inter_op_threads": 1, "execution_mode": "sequential", "graph_optimization": "all",
            "precision": model.precision, "opset": model.opset, "exporter": model.exporter,
            "input_shapes": {k: list(s) for k, (s, _) in model.inputs.items()},
            "source": str(model.path) if model.exporter is None else f"nn.Module {type(src).__name__}",
        })


_TORCH_PRECISION = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


@_RUNTIMES.register("torch")
@contextlib.contextmanager
def _torch_bench(src: ModelSource, input_shape: Sequence[int] | None, threads: int) -> Iterator[_Bench]:
    if not isinstance(src, nn.Module):
        raise ConfigError(f"host-torch runs an nn.Module, got {type(src).__name__}; measure .onnx files on host-ort")
    shape = _check_input_shape(input_shape)
    if shape is None:
        raise ConfigError(f"input_shape is required to measure an nn.Module ({type(src).__name__})")
    p = next(src.parameters(), None)
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(SEED)).to(dtype)
    old_threads, was_training = torch.get_num_threads(), src.training
    torch.set_num_threads(threads)
    src.eval()
    try:
        def run() -> None:
            with torch.inference_mode():
                src(x)

        try:
            run()
        except Exception as e:
            raise UnsupportedOpError(f"PyTorch cannot run {type(src).__name__} on a (1, *{shape}) input: {e}") from e
        yield _Bench(run, {"runtime": "torch", "runtime_version": torch.__version__, "mode": "eager inference_mode",
                           "precision": _TORCH_PRECISION.get(dtype, str(dtype)), "opset": None, "exporter": None,
                           "input_shapes": {"input": [1, *shape]}, "source": f"nn.Module {type(src).__name__}"})
    finally:
        torch.set_num_threads(old_threads)
        src.train(was_training)


# --- measuring --------------------------------------------------------------------------------------------


def time_runs_ms(run: Callable[[], None], warmup: int, repeats: int) -> np.ndarray:
    """`warmup` untimed calls, then `repeats` calls each timed with `time.perf_counter_ns`, in ms."""
    for _ in range(warmup):
        run()
    out = np.empty(repeats, dtype=np.float64)
    for i in range(repeats):
        t0 = time.perf_counter_ns()
        run()
        out[i] = (time.perf_counter_ns() - t0) / 1e6
    return out


@dataclass(frozen=True)
class LatencyResult:
    """A batch-1 latency figure: `measurement` (value = median ms, with method, spread and machine), the
    `stats` of the round it was taken from, every round's samples, and `stable`/`warning` on the spread.
    With several sessions, `stats` is that of the session whose median is the figure's median and
    `session_medians_ms` holds each session's figure."""

    target: str
    measurement: Measurement
    stats: SampleStats
    samples_ms: tuple[tuple[float, ...], ...]
    stable: bool
    warning: str | None = None
    session_medians_ms: tuple[float, ...] = ()

    @property
    def median_ms(self) -> float:
        return float(np.median(self.session_medians_ms)) if self.session_medians_ms else self.stats.median

    @property
    def p10_ms(self) -> float:
        return self.stats.p10

    @property
    def p90_ms(self) -> float:
        return self.stats.p90

    @property
    def cv(self) -> float:
        return self.stats.cv

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "measurement": self.measurement.to_dict(), "stats": self.stats.to_dict(),
                "samples_ms": [list(r) for r in self.samples_ms], "stable": self.stable, "warning": self.warning,
                "session_medians_ms": list(self.session_medians_ms)}


def _check_counts(repeats: int, warmup: int, rounds: int, threads: int | None, sessions: int = 1) -> int:
    for name, value, low in (("repeats", repeats, 3), ("warmup", warmup, 0), ("rounds", rounds, 1),
                             ("sessions", sessions, 1)):
        check_int(name, value, low)
    return resolve_threads(threads)


def resolve_threads(threads: int | None) -> int:
    """`threads` checked (an int >= 1), or the usable cores when None."""
    if threads is None:
        return usable_threads()
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ConfigError(f"threads must be an int >= 1 or None, got {threads!r}")
    return threads


def _host_target(target: str | Target) -> Target:
    t = get_target(target)
    if t.kind != "host" or t.runtime not in _RUNTIMES:
        hosts = ", ".join(h.name for h in list_targets("host") if h.runtime in _RUNTIMES)
        raise ConfigError(f"target {t.name!r} is a {t.kind} target (runtime {t.runtime!r}); measure_latency runs "
                          f"on host targets: {hosts}")
    return t


def _measure_rounds(run: Callable[[], None], warmup: int, repeats: int, rounds: int,
                    max_cv: float) -> tuple[Any, ...]:
    """Rounds until one is stable; returns (stats of the chosen round, its index, all rounds' samples)."""
    samples: list[np.ndarray] = []
    all_stats: list[SampleStats] = []
    for _ in range(rounds):
        samples.append(time_runs_ms(run, warmup, repeats))
        all_stats.append(summarize_samples(samples[-1], max_cv=max_cv))
        if all_stats[-1].stable:
            break
    best = min(range(len(all_stats)), key=lambda i: (not all_stats[i].stable, all_stats[i].cv))
    return all_stats[best], best, samples


def _warning(what: str, target: str, stats: SampleStats, rounds_run: int, session_cv: float = 0.0) -> str:
    if stats.stable:
        return (f"latency of {what} on {target}: the sessions' figures spread too wide: cv {session_cv:.1%} > "
                f"max_cv {stats.max_cv:.1%}; the machine may be busy: re-measure or quote with this spread")
    return (f"latency of {what} on {target}: spread too wide in all {rounds_run} round(s): cv {stats.cv:.1%} > "
            f"max_cv {stats.max_cv:.1%} (median {stats.median:.4g} ms, p10 {stats.p10:.4g}, p90 {stats.p90:.4g}); "
            f"the machine may be busy: re-measure or quote with this spread")


def measure_latency(
    model_or_onnx: ModelSource,
    target: str | Target = "host-ort",
    *,
    input_shape: Sequence[int] | None = None,
    repeats: int = 50,
    warmup: int = 10,
    threads: int | None = None,
    rounds: int = 3,
    max_cv: float = 0.05,
    sessions: int = 1,
) -> LatencyResult:
    """Median batch-1 latency (ms) of a module or `.onnx` file on a host target.

    Each round runs `warmup` untimed and `repeats` timed inferences on fixed-seed random input, with
    `threads` intra-op threads (default: usable cores). A round is stable when cv <= `max_cv`; rounds
    continue until one is stable, at most `rounds`. The figure comes from the first stable round, else
    from the least noisy one with `stable=False` and a warning (also issued as a `RuntimeWarning`).
    With `sessions` > 1 this is repeated on that many fresh runtime sessions (ONNX Runtime; eager
    PyTorch reuses its module) and the figure is the median of the session figures: on a shared VM one
    session can sit 10-40% off the others, so one session is not a repeatable figure (see
    benchmarks/host_repeatability.py); the result is unstable when the sessions spread beyond `max_cv`.
    Errors: unknown/non-host target → ConfigError; missing or corrupt file → DataError; a model the
    runtime cannot load or run → UnsupportedOpError naming the node and op.
    """
    t = _host_target(target)
    n_threads = _check_counts(repeats, warmup, rounds, threads, sessions)
    summarize_samples([1.0], max_cv=max_cv)  # validates max_cv before any work
    with _RUNTIMES.get(t.runtime)(model_or_onnx, input_shape, n_threads) as bench:
        runs = [bench.run] + [bench.fresh() if bench.fresh else bench.run for _ in range(sessions - 1)]
        per_session = [_measure_rounds(run, warmup, repeats, rounds, max_cv) for run in runs]
    medians = np.array([p[0].median for p in per_session])
    pick = int(np.argsort(medians)[(len(medians) - 1) // 2])
    stats, chosen, _ = per_session[pick]
    samples = [s for p in per_session for s in p[2]]
    session_cv = float(medians.std(ddof=1) / medians.mean()) if sessions > 1 else 0.0
    stable = stats.stable and session_cv <= max_cv
    warning = None if stable else _warning(bench.method["source"], t.name, stats, len(samples), session_cv)
    if warning:
        warnings.warn(warning, RuntimeWarning, stacklevel=2)
    method = {**bench.method, "threads": n_threads, "warmup": warmup, "repeats": repeats, "rounds": rounds,
              "sessions": sessions, "rounds_run": len(samples), "round_used": chosen, "batch_size": 1,
              "seed": SEED, "timer": "time.perf_counter_ns", "max_cv": max_cv, "stable": stable, "target": t.name}
    spread = {k: getattr(stats, k) for k in ("p10", "p90", "cv", "min", "max", "mean", "std", "n")}
    spread |= {"session_cv": session_cv, "session_max_over_min": float(medians.max() / medians.min())}
    machine = {**machine_info(), "runtime": method["runtime"], "runtime_version": method["runtime_version"],
               "threads": n_threads}
    m = Measurement("latency", float(np.median(medians)), "ms", method, spread, machine)
    return LatencyResult(t.name, m, stats, tuple(tuple(float(v) for v in s) for s in samples), stable, warning,
                         tuple(float(v) for v in medians) if sessions > 1 else ())
