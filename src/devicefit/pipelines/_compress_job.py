"""The compress job: a trained run directory (or checkpoint + spec) → prune / quantize / distil → a new run
directory with the compressed model and a before/after record (test accuracy, bytes, MACs, measured latency).

The input is only read: its files' SHA-256 are recorded before and checked after. Methods are registered in
`COMPRESS_METHODS`; each gets the loaded source and returns the compressed model.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from devicefit.compress import DepthPruneConfig, LatencyPruneConfig, PruneConfig, PTQConfig
from devicefit.core import (
    ArchSpec,
    ConfigError,
    DataError,
    Registry,
    RunRecord,
    atomic_write_json,
    check_int,
    check_positive,
    from_dict,
    machine_info,
    read_json,
    sha256_file,
    to_dict,
)
from devicefit.train import TrainConfig

from ._run_dir import claim_run_dir, run_log
from ._train_job import DataConfig, ModelConfig, TrainJobConfig

__all__ = ["COMPRESS_METHODS", "COMPRESS_STAGE", "CompressJobConfig", "default_finetune", "load_source",
           "run_compress_job"]

COMPRESS_STAGE = "compress"
_DATA = "data.json"  # the data config a compress run used, so a later job on its output uses it too


def default_finetune() -> TrainConfig:
    """Fine-tuning after compression: 2 epochs at lr 0.01, no warm-up (a short recovery, not a retrain)."""
    return TrainConfig(epochs=2, lr=0.01, warmup_epochs=0.0)


@dataclass(frozen=True)
class CompressJobConfig:
    """One compression job.

    source: a train run directory (spec.json + model.pt [+ config.json]) or a weights file (then `spec` names
        its spec.json). method: a name in `COMPRESS_METHODS` ("prune", "quantize", "distill", or "finetune": no
        compression, the source fine-tuned alike, the control a pruned model is judged against).
    data: dataset for calibration, fine-tuning and the test split (the source run's data when left default).
    prune / ptq: the method settings; finetune: training after each pruning step and for distillation
        (`no_finetune` skips it after pruning); distill: fine-tune against the unpruned source as teacher.
    latency_ms / speedup: for "prune", prune round by round until `target` measures at most `latency_ms`, or
        until the pruned model runs `speedup` times faster than the source timed beside it (latency-driven
        mode, at most one of the two; `prune.ratio`/`steps` then set per round, each round removing at most
        `max_step_ratio` of the channels), else prune `prune.ratio` in `prune.steps` steps. A round measured
        within 10% of the goal is timed again with 15 more rounds before it is judged, and each round may also
        take one channel group out of a single layer (`LatencyPruneConfig`); `goal_tolerance` accepts a figure
        that fraction short of the goal (0: none).
    depth: for "prune", first remove `depth.blocks` residual blocks (depth pruning: each replaced by its bypass,
        chosen greedily by `depth.criterion` on 512 labelled training images, then one fine-tune), then prune
        channels as above from the thinner network (`channel_pruning=False`: blocks only). On a CPU at
        batch 1 a removed block saves its operators' fixed cost too: on the AVX-512 VM, ResNet-20 without 4 of its
        9 blocks measured 1.75-1.93x faster at 1.86x fewer MACs, where channel pruning needed 4-5x fewer MACs
        for 2x (README, depth pruning).
    depth_search: with a latency goal, choose the number of blocks instead (`--drop-blocks auto`): every count
        from 0 to the most that may go (`depth.blocks` > 0 caps it) is pruned to the goal without fine-tuning
        and ranked by `depth_search_judge`, a name in `PLAN_JUDGES`: "macs" (default) takes the plan keeping
        the most MACs at the goal; "finetune" fine-tunes each plan one epoch on `depth_search_images` training
        images and takes the best validation accuracy. The chosen plan is then pruned as above
        (`_depth_plans`; scored plans are kept in `run_dir/depth_plans.json`, so a killed search resumes). On
        ResNet-20 at 2x the four plans trained to the end ranked exactly as their MACs, and the one-epoch
        accuracy ranked them almost in reverse (README, depth search).
    final_epochs: for "prune", after the last pruning step or round, fine-tune this many more epochs with the
        `finetune` settings (and the teacher when `distill`): the short per-step recovery keeps the rounds cheap,
        the final run restores accuracy. Checkpointed in `run_dir/final_finetune/`, the pruned weights before it
        in `run_dir/pruned.pt`, so a killed job resumes there instead of pruning again. final_lr: that run's
        peak learning rate (None: `finetune.lr`; "source": the rate the source was trained with, read from its
        train run's config.json). Fine-tuning a pruned network at a large rate again (learning-rate rewinding,
        Renda et al. 2020) recovers more than the small rate of the per-round fine-tune: README, pruning.
    student: for "distill", the zoo model to train (name "" → the source's family with `params` overrides).
    n_calibration: train images for int8 calibration; latency_repeats/latency_rounds: timing of before/after,
        interleaved on `target`, and of every latency-driven pruning round (at least 3 repeats).
        run_dir: the new folder (required; never the source).
    """

    source: str = ""
    spec: str | None = None
    method: str = "quantize"
    run_dir: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    ptq: PTQConfig = field(default_factory=PTQConfig)
    finetune: TrainConfig = field(default_factory=default_finetune)
    no_finetune: bool = False
    distill: bool = False
    latency_ms: float | None = None
    speedup: float | None = None
    max_step_ratio: float = 0.3
    goal_tolerance: float = 0.0
    depth: DepthPruneConfig = field(default_factory=lambda: DepthPruneConfig(blocks=0))
    channel_pruning: bool = True
    depth_search: bool = False
    depth_search_images: int = 10_000
    depth_search_judge: str = "macs"
    final_epochs: int = 0
    final_lr: float | str | None = None
    student: ModelConfig = field(default_factory=lambda: ModelConfig(name="", params={}))
    n_calibration: int = 256
    target: str = "host-ort"
    latency_repeats: int = 50
    latency_rounds: int = 3

    def __post_init__(self) -> None:
        COMPRESS_METHODS.get(self.method)
        if not self.source:
            raise ConfigError("source must name a train run directory or a weights file, got ''")
        if not self.run_dir:
            raise ConfigError("run_dir must name the new output folder (the source is never written)")
        for name in ("n_calibration", "latency_repeats", "latency_rounds"):
            check_positive(name, getattr(self, name))
        if self.latency_ms is not None or self.speedup is not None:  # validates the goal
            LatencyPruneConfig(latency_ms=self.latency_ms, speedup=self.speedup, target=self.target,
                               max_step_ratio=self.max_step_ratio, tolerance=self.goal_tolerance)
        check_int("final_epochs", self.final_epochs, 0)
        if self.final_lr is not None:
            if isinstance(self.final_lr, str):
                if self.final_lr != "source":
                    raise ConfigError(f"final_lr must be a number > 0 or 'source' (the source's training rate), "
                                      f"got {self.final_lr!r}")
            else:
                check_positive("final_lr", self.final_lr)
            if not self.final_epochs:
                raise ConfigError(f"final_lr={self.final_lr} is the final fine-tune's learning rate: it needs "
                                  "final_epochs > 0")
        if not isinstance(self.channel_pruning, bool):
            raise ConfigError(f"channel_pruning must be a bool, got {self.channel_pruning!r}")
        if (self.depth.blocks or not self.channel_pruning) and self.method != "prune":
            raise ConfigError(f"depth.blocks / channel_pruning are pruning settings: they need method='prune' (got "
                              f"method={self.method!r})")
        check_int("depth_search_images", self.depth_search_images, 1)
        from ._depth_plans import PLAN_JUDGES

        judge = PLAN_JUDGES.get(self.depth_search_judge)
        if not isinstance(self.depth_search, bool):
            raise ConfigError(f"depth_search must be a bool, got {self.depth_search!r}")
        if self.depth_search and (self.method != "prune" or (self.latency_ms is None and self.speedup is None)
                                  or not self.channel_pruning):
            raise ConfigError("depth_search (--drop-blocks auto) compares pruning plans at a latency goal: it needs "
                              "method='prune', speedup or latency_ms, and channel_pruning=true (got "
                              f"method={self.method!r}, speedup={self.speedup}, latency_ms={self.latency_ms}, "
                              f"channel_pruning={self.channel_pruning})")
        if self.depth_search and judge.trains and self.no_finetune:
            raise ConfigError(f"depth_search_judge={self.depth_search_judge!r} fine-tunes every plan: it needs "
                              "no_finetune=false (or depth_search_judge='macs', which trains nothing)")
        if not self.channel_pruning and not self.depth.blocks:
            raise ConfigError("channel_pruning=false leaves nothing to prune: set depth.blocks (--drop-blocks) to "
                              "remove residual blocks")
        if self.method == "prune" and self.prune.round_to == "auto":
            from devicefit.hardware import channel_multiple

            channel_multiple(self.target)  # a non-host target has no known multiple: ConfigError naming hosts
        if self.final_epochs and (self.method != "prune" or self.no_finetune):
            raise ConfigError(f"final_epochs={self.final_epochs} fine-tunes after pruning: it needs method='prune' "
                              f"and no_finetune=false (got method={self.method!r}, no_finetune={self.no_finetune})")


@dataclass
class Source:
    """The loaded input: model (fp32, eval), spec, files read, the data config to use, and the peak learning
    rate the source was trained with (None unless it is a train run with its config.json)."""

    model: nn.Module
    spec: ArchSpec
    files: dict[str, str]
    data: DataConfig
    train_lr: float | None = None


Method = Callable[["_Ctx"], tuple[nn.Module | None, Path, dict[str, Any]]]
COMPRESS_METHODS: Registry[Method] = Registry("compress method")


@dataclass
class _Ctx:
    cfg: CompressJobConfig
    src: Source
    run_dir: Path
    train: Any
    test: Any
    log: Callable[..., None]


def _resolve_source(cfg: CompressJobConfig) -> tuple[Path, Path, Path | None]:
    path = Path(cfg.source)
    if path.is_dir():
        weights, spec, config = path / "model.pt", path / "spec.json", path / "config.json"
        for p in (weights, spec):
            if not p.exists():
                raise DataError(f"source {path} is not a finished train run: {p.name} is missing")
        return weights, spec, config if config.exists() else None
    if not path.is_file():
        raise DataError(f"source {path} does not exist (expected a run directory or a weights file)")
    spec = Path(cfg.spec) if cfg.spec else path.with_name("spec.json")
    if not spec.is_file():
        raise ConfigError(f"source {path} is a weights file: pass spec= the spec.json of its model ({spec} "
                          "does not exist)")
    return path, spec, None


def load_source(cfg: CompressJobConfig) -> Source:
    """Build the source model from its spec and load its weights (pruned weights are resized to fit)."""
    from devicefit import compress as C
    from devicefit import models as M
    from devicefit import train as T

    weights, spec_path, config = _resolve_source(cfg)
    spec = ArchSpec.from_dict(read_json(spec_path))
    model = M.build(spec)
    try:
        T.load_weights(model, weights)
    except (ConfigError, DataError):  # a pruned run: same family, fewer channels
        import torch

        C.load_pruned_state_(model, torch.load(weights, map_location="cpu", weights_only=True))
    files = {str(p): sha256_file(p) for p in (weights, spec_path, config) if p is not None}
    stamp = read_json(config) if config is not None else {}
    job = from_dict(TrainJobConfig, stamp["config"]) if stamp.get("kind") == "train" else None
    return Source(model.eval(), spec, files, _source_data(cfg, config, job), job.train.lr if job else None)


def _source_data(cfg: CompressJobConfig, config: Path | None, job: TrainJobConfig | None) -> DataConfig:
    """`cfg.data` when set beyond `data_dir`; else the source run's data (its train job `job`, a compress run's
    data.json) with `cfg.data.data_dir` when given, so a model is tested on the split it was trained for."""
    if dataclasses.replace(cfg.data, data_dir=None) != DataConfig() or config is None:
        return cfg.data
    if job is not None:
        data = job.data
    elif (config.parent / _DATA).exists():
        data = from_dict(DataConfig, read_json(config.parent / _DATA))
    else:
        return cfg.data
    return dataclasses.replace(data, data_dir=cfg.data.data_dir) if cfg.data.data_dir else data


def _measure_pair(before: Path, after: Path, cfg: CompressJobConfig) -> dict[str, Any]:
    """Batch-1 latency of both files on `cfg.target`, timed side by side in interleaved rounds."""
    import warnings

    from devicefit.hardware import measure_interleaved

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the spread of each round is kept in the record
        m = measure_interleaved({"before": before, "after": after}, cfg.target, rounds=cfg.latency_rounds,
                                repeats=cfg.latency_repeats, threads=1)
    return {"before_latency_ms": m.median_ms("before"), "after_latency_ms": m.median_ms("after"),
            "latency_rounds_ms": {k: list(v) for k, v in m.rounds_ms.items()}, "speedup": m.ratio("before", "after"),
            "latency_method": f"{cfg.target}, 1 thread, batch 1, median of {cfg.latency_rounds} interleaved "
                              f"rounds x {cfg.latency_repeats} repeats (speed-up: median of per-round ratios)"}


def _side(model: nn.Module | None, onnx_path: Path, macs: int, test: Any) -> dict[str, Any]:
    from devicefit.compress import evaluate_onnx

    acc = evaluate_onnx(onnx_path, test)["accuracy"]
    params = sum(p.numel() for p in model.parameters()) if model is not None else None
    return {"accuracy": acc, "onnx_bytes": onnx_path.stat().st_size, "macs": macs, "params": params}


def run_compress_job(cfg: CompressJobConfig, *, echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run `cfg.method` on the source and write the new run directory; return the before/after record.
    A finished run directory with the same config returns its stored record at once."""
    from devicefit import data as D
    from devicefit.nn import analyze, export_onnx

    run_dir = Path(cfg.run_dir)
    if Path(cfg.source).resolve() in (run_dir.resolve(), *run_dir.resolve().parents):
        raise ConfigError(f"run_dir {run_dir} is inside the source {cfg.source}; the source is never written")
    src = load_source(cfg)
    claim_run_dir(run_dir, "compress", to_dict(cfg))
    if (run_dir / f"{COMPRESS_STAGE}.json").exists():
        return {**RunRecord.load(run_dir / f"{COMPRESS_STAGE}.json").metrics, "cached": True}
    log = run_log(run_dir, echo)

    started = time.perf_counter()
    atomic_write_json(run_dir / _DATA, to_dict(src.data))
    train = D.load_dataset(src.data.name, "train", src.data.data_dir, **src.data.options)
    test = D.load_dataset(src.data.name, "test", src.data.data_dir, **src.data.options)
    shape = tuple(src.spec["input_shape"])
    before_onnx = export_onnx(src.model, shape, run_dir / "before.onnx", dynamic_batch=True)
    ctx = _Ctx(cfg, src, run_dir, train, test, log)
    log("%s: source %s (%s), data %s", cfg.method, cfg.source, src.spec, train.source)
    after_model, after_onnx, extra = COMPRESS_METHODS.get(cfg.method)(ctx)
    macs_before = analyze(src.model, shape).macs
    macs_after = analyze(after_model, shape).macs if after_model is not None else macs_before
    metrics = {"method": cfg.method, "source": cfg.source, "source_sha256": src.files,
               "before": _side(src.model, before_onnx, macs_before, test),
               "after": _side(after_model, after_onnx, macs_after, test),
               **_measure_pair(before_onnx, after_onnx, cfg), "details": extra, "test_source": test.source,
               "n_test": len(test), "job_seconds": time.perf_counter() - started}
    _check_source_untouched(src)
    RunRecord(COMPRESS_STAGE, to_dict(cfg), metrics, {"before": "before.onnx", "after": after_onnx.name},
              machine_info()).save(run_dir)
    log("accuracy %.4f -> %.4f, latency %.4g -> %.4g ms", metrics["before"]["accuracy"],
        metrics["after"]["accuracy"], metrics["before_latency_ms"], metrics["after_latency_ms"])
    return {**metrics, "run_dir": str(run_dir), "cached": False}


def _check_source_untouched(src: Source) -> None:
    changed = [p for p, h in src.files.items() if sha256_file(p) != h]
    if changed:
        raise DataError(f"source files changed during the job: {changed}")


def _finetune_fn(ctx: _Ctx, teacher: nn.Module | None, epochs: int | None = None, run_dir: Path | None = None,
                 lr: float | None = None) -> Callable[[nn.Module], nn.Module] | None:
    """Fine-tuning on the source's training split (a tenth held out for validation) with `ctx.cfg.finetune`
    (`epochs` and `lr` override its epoch count and learning rate; `run_dir` makes it checkpointed and
    resumable); None with `no_finetune`."""
    from devicefit import data as D
    from devicefit import train as T

    if ctx.cfg.no_finetune:
        return None
    tr, val = D.split_train_val(ctx.train, ctx.src.data.val_fraction or 0.1, seed=ctx.cfg.finetune.seed)
    augment = D.DATASETS.get(ctx.src.data.name).augment
    cfg = dataclasses.replace(ctx.cfg.finetune, epochs=ctx.cfg.finetune.epochs if epochs is None else epochs,
                              lr=ctx.cfg.finetune.lr if lr is None else lr)

    def finetune(net: nn.Module) -> nn.Module:
        T.fit(net, tr, cfg, val_ds=val, teacher=teacher, augment_default=augment, progress=run_dir is not None,
              run_dir=run_dir, log=lambda line: ctx.log("finetune %s", line))
        return net
    return finetune


def _block_batches(ctx: _Ctx) -> list[tuple[Any, Any]]:
    """512 labelled training images (class-stratified, fixed) in batches of 128: what blocks are scored on."""
    import torch

    from devicefit import data as D

    ds = D.calibration_split(ctx.train, min(512, len(ctx.train)), seed=0)
    x, y = D.to_float_tensor(ds, ds.x), torch.as_tensor(ds.y, dtype=torch.long)
    return [(x[i:i + 128], y[i:i + 128]) for i in range(0, len(y), 128)]


def _drop_blocks(ctx: _Ctx, shape: tuple[int, ...], finetune: Callable[[nn.Module], nn.Module] | None,
                 depth: DepthPruneConfig) -> tuple[nn.Module, dict[str, Any] | None]:
    """The source with `depth.blocks` residual blocks removed (scored on `_block_batches`) and fine-tuned once,
    and the removal's record; the source itself and None when no block is to go."""
    from devicefit import compress as C

    if not depth.blocks:
        return ctx.src.model, None
    pruner = C.DepthPruner(depth)
    net = pruner.fit(ctx.src.model, shape, batches=_block_batches(ctx)).result_.model
    ctx.log("depth pruning removed %s (%s)", ", ".join(pruner.removed_), depth.criterion)
    if finetune is not None:
        net = finetune(net).eval()
    return net, pruner.report()


def _search_depth(ctx: _Ctx, shape: tuple[int, ...], lcfg: LatencyPruneConfig, teacher: nn.Module | None
                  ) -> dict[str, Any]:
    """`_depth_plans.search_depth` on the source with the job's settings (its fine-tune split and teacher)."""
    from devicefit import data as D

    from ._depth_plans import search_depth

    cfg = ctx.cfg
    tr, val = D.split_train_val(ctx.train, ctx.src.data.val_fraction or 0.1, seed=cfg.finetune.seed)
    return search_depth(ctx.src.model, shape, lcfg, cfg.depth, batches=_block_batches(ctx), train_ds=tr,
                        val_ds=val, finetune=cfg.finetune, images=cfg.depth_search_images,
                        state_path=ctx.run_dir / "depth_plans.json", teacher=teacher,
                        augment=D.DATASETS.get(ctx.src.data.name).augment, judge=cfg.depth_search_judge,
                        log=ctx.log)


_PRUNED, _PRUNED_DETAILS = "pruned.pt", "pruned.json"  # the pruned weights before the final fine-tune


def _final_lr(cfg: CompressJobConfig, src: Source) -> float:
    """The final fine-tune's peak learning rate: `cfg.final_lr`, the source's training rate for "source", or
    `cfg.finetune.lr` when unset."""
    if cfg.final_lr is None:
        return cfg.finetune.lr
    if cfg.final_lr != "source":
        return float(cfg.final_lr)
    if src.train_lr is None:
        raise ConfigError(f"final_lr='source' uses the learning rate the source was trained with, but {cfg.source} "
                          "is not a train run with its config.json (a weights file or a compress run): give "
                          "final_lr as a number")
    return src.train_lr


@COMPRESS_METHODS.register("prune")
def _prune(ctx: _Ctx) -> tuple[nn.Module, Path, dict[str, Any]]:
    import copy

    import torch

    from devicefit import compress as C
    from devicefit import train as T
    from devicefit.nn import export_onnx

    cfg, shape = ctx.cfg, tuple(ctx.src.spec["input_shape"])
    teacher = ctx.src.model if cfg.distill else None
    final_lr = _final_lr(cfg, ctx.src)  # before any pruning: a 'source' the job cannot read fails at once
    stash, stash_details = ctx.run_dir / _PRUNED, ctx.run_dir / _PRUNED_DETAILS
    if cfg.final_epochs and stash.exists() and stash_details.exists():
        net = C.load_pruned_state_(copy.deepcopy(ctx.src.model),
                                   torch.load(stash, map_location="cpu", weights_only=True))
        details = read_json(stash_details)
        ctx.log("resuming: pruning finished earlier (%s), going on with the final fine-tune", stash)
    else:
        finetune = _finetune_fn(ctx, teacher)
        prune = cfg.prune
        if prune.round_to == "auto":  # the target's channel multiple (its CPU's fp32 SIMD width) and floor
            from devicefit.hardware import channel_floor, channel_multiple

            prune = dataclasses.replace(prune, round_to=channel_multiple(cfg.target),
                                        round_floor=prune.round_floor or channel_floor(cfg.target))
            ctx.log("round_to=auto: channel counts in multiples of %d on %s%s", prune.round_to, cfg.target,
                    f" ({prune.round_floor} below that)" if prune.round_floor else "")
        lcfg = C.LatencyPruneConfig(latency_ms=cfg.latency_ms, speedup=cfg.speedup, target=cfg.target,
                                    max_step_ratio=cfg.max_step_ratio, prune=prune, rounds=cfg.latency_rounds,
                                    repeats=max(3, cfg.latency_repeats), tolerance=cfg.goal_tolerance
                                    ) if cfg.latency_ms is not None or cfg.speedup is not None else None
        search = _search_depth(ctx, shape, lcfg, teacher) if cfg.depth_search and lcfg is not None else None
        depth_cfg = cfg.depth if search is None else dataclasses.replace(cfg.depth, blocks=search["chosen"])
        start, depth = _drop_blocks(ctx, shape, finetune, depth_cfg)
        if lcfg is not None:
            if not cfg.channel_pruning:  # blocks only: round 0 times the depth-pruned network, nothing more
                lcfg = dataclasses.replace(lcfg, max_steps=0)
            net, details = C.prune_to_latency(ctx.src.model, shape, lcfg, finetune=finetune, start=start)
        elif cfg.channel_pruning:
            res = C.StructuredPruner(prune).fit(start, shape, finetune=finetune).result_
            net, details = res.model, res.to_dict()
        else:
            net, details = start, {}
        details = {**details, "round_to": prune.round_to, "round_floor": prune.round_floor}
        if depth is not None:
            details = {**details, "blocks": depth}
        if search is not None:
            details = {**details, "depth_search": search}
        if cfg.final_epochs:
            T.save_weights(net, stash)
            atomic_write_json(stash_details, details)
    if cfg.final_epochs:
        ctx.log("final fine-tune: %d epochs, lr %g", cfg.final_epochs, final_lr)
        final = _finetune_fn(ctx, teacher, epochs=cfg.final_epochs, run_dir=ctx.run_dir / "final_finetune",
                             lr=final_lr)
        assert final is not None  # no_finetune with final_epochs is refused by the config
        t0 = time.perf_counter()
        final(net)
        details = {**details, "final_finetune": {"epochs": cfg.final_epochs, "lr": final_lr,
                                                 "seconds": time.perf_counter() - t0,
                                                 "checkpoint_dir": "final_finetune"}}
    T.save_weights(net, ctx.run_dir / "model.pt")
    atomic_write_json(ctx.run_dir / "spec.json", ctx.src.spec.to_dict())
    atomic_write_json(ctx.run_dir / "shapes.json", C.pruned_shapes(net))
    path = export_onnx(net, shape, ctx.run_dir / "model.onnx", dynamic_batch=True)
    return net, path, details


@COMPRESS_METHODS.register("quantize")
def _quantize(ctx: _Ctx) -> tuple[None, Path, dict[str, Any]]:
    from devicefit import compress as C
    from devicefit import data as D

    calib = D.calibration_split(ctx.train, min(ctx.cfg.n_calibration, len(ctx.train)), seed=0)
    q = C.PostTrainingQuantizer(ctx.cfg.ptq).calibrate(ctx.src.model, calib, tuple(ctx.src.spec["input_shape"]))
    path = q.save(ctx.run_dir / "model.onnx")
    return None, path, {**q.report_, "runtime_ops": C.runtime_op_counts(path)}


@COMPRESS_METHODS.register("finetune")
def _finetune_only(ctx: _Ctx) -> tuple[nn.Module, Path, dict[str, Any]]:
    """The control of a pruning run: the unpruned source fine-tuned with the same `finetune` recipe (and
    teacher, with `distill`) for `finetune.epochs`, checkpointed in `run_dir/finetune` (resumable). What the
    extra epochs alone give, so a pruned model's accuracy can be judged against a model trained as long."""
    import copy

    from devicefit import train as T
    from devicefit.nn import export_onnx

    finetune = _finetune_fn(ctx, ctx.src.model if ctx.cfg.distill else None, run_dir=ctx.run_dir / "finetune")
    if finetune is None:
        raise ConfigError("method 'finetune' trains the source: no_finetune must be false")
    net = finetune(copy.deepcopy(ctx.src.model))
    T.save_weights(net, ctx.run_dir / "model.pt")
    atomic_write_json(ctx.run_dir / "spec.json", ctx.src.spec.to_dict())
    path = export_onnx(net, tuple(ctx.src.spec["input_shape"]), ctx.run_dir / "model.onnx", dynamic_batch=True)
    return net, path, {"epochs": ctx.cfg.finetune.epochs, "checkpoint_dir": "finetune"}


@COMPRESS_METHODS.register("distill")
def _distill(ctx: _Ctx) -> tuple[nn.Module, Path, dict[str, Any]]:
    from devicefit import models as M
    from devicefit import train as T
    from devicefit.nn import export_onnx

    base = ctx.src.spec
    name = ctx.cfg.student.name or base.family
    keep = {k: base[k] for k in ("num_classes", "input_shape")}
    spec = M.default_spec(name, **keep, **ctx.cfg.student.params)
    student = M.build(spec)
    finetune = _finetune_fn(ctx, ctx.src.model)
    if finetune is None:
        raise ConfigError("distill trains the student: no_finetune must be false")
    finetune(student)
    T.save_weights(student, ctx.run_dir / "model.pt")
    atomic_write_json(ctx.run_dir / "spec.json", spec.to_dict())
    path = export_onnx(student, tuple(base["input_shape"]), ctx.run_dir / "model.onnx", dynamic_batch=True)
    return student, path, {"student": str(spec), "teacher": str(base)}
