"""The training loop `fit`: seeded and deterministic, checkpointed every few epochs, resumable.

A run directory holds `checkpoint.pt` (everything needed to continue bit-for-bit), and once
the run is complete `model.pt` (final weights) and `train.json` (a `RunRecord`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from devicefit.core import ConfigError, DataError, RunRecord, check_choice, machine_info, to_dict
from devicefit.data import AUGMENTATIONS, ArrayDataset, BatchLoader
from devicefit.nn._losses import distillation_loss

from ._checkpoint import (
    check_fingerprint,
    check_state_compatible,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    save_weights,
    set_rng_state,
)
from ._config import TrainConfig
from ._evaluate import _check_logits, evaluate
from ._optim import build_optimizer, build_scheduler
from ._result import EpochStats, TrainResult

__all__ = ["CHECKPOINT_NAME", "MODEL_NAME", "RECORD_STAGE", "DataParallel", "PathPlan", "fit"]

CHECKPOINT_NAME = "checkpoint.pt"
MODEL_NAME = "model.pt"
RECORD_STAGE = "train"

Log = logging.Logger | Callable[[str], None]
OnBatch = Callable[[int, int, float], None]
BeforeBatch = Callable[[int, int], None]
PathPlan = Callable[[int, int], Sequence[Callable[[], object]]]


class DataParallel(Protocol):
    """How `fit` trains as one of `world_size` processes on shards of every batch (see
    `devicefit.train.fit_supernet`). Every process iterates the same seeded loader; `shard` keeps its part.

    is_writer: only this process writes the checkpoint and outputs. `shard(x, y)` returns this process's
    non-empty part of the batch. `sync_grads(model, share)` turns each process's gradients of its mean
    loss into the gradients of the whole batch's mean loss (`share`: this shard's fraction of the batch).
    `sync_buffers(model)` makes buffers (BatchNorm statistics) equal across processes (end of an epoch).
    `sum(values)` returns the element-wise sums over processes.
    """

    world_size: int
    is_writer: bool

    def shard(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def sync_grads(self, model: nn.Module, share: float) -> None: ...

    def sync_buffers(self, model: nn.Module) -> None: ...

    def sum(self, values: Sequence[float]) -> list[float]: ...


def fit(model: nn.Module, train_ds: ArrayDataset, cfg: TrainConfig, *, val_ds: ArrayDataset | None = None,
        run_dir: str | os.PathLike[str] | None = None, teacher: nn.Module | None = None,
        augment_default: str = "none", progress: bool = True, log: Log | None = None,
        on_batch: OnBatch | None = None, before_batch: BeforeBatch | None = None,
        parallel: DataParallel | None = None, fingerprint_extra: Mapping[str, Any] | None = None,
        path_plan: PathPlan | None = None, inplace_distill: bool = False) -> TrainResult:
    """Train `model` in place on `train_ds` with `cfg`; return the per-epoch history.

    Seeds torch, numpy and Python `random` with `cfg.seed` (global state), shuffles and
    augments with a loader generator seeded alike, and sets torch's thread count and
    deterministic mode for the duration of the call. Loss: cross-entropy with label smoothing,
    or with `teacher` (put in eval mode, never updated) `distillation_loss` with
    `cfg.distill_alpha`/`distill_temperature`. `val_ds` is evaluated after every epoch.

    With `run_dir`, `checkpoint.pt` is written atomically every `cfg.checkpoint_every_epochs`
    epochs and after the last; a later call on the same directory resumes after the last
    checkpointed epoch and ends with the same weights as an uninterrupted run, or, if the run
    is complete, loads the final weights into `model` and returns the stored result at once.
    A checkpoint from another configuration, dataset or model shape raises `ConfigError`.
    An interrupt (KeyboardInterrupt) leaves the last checkpoint intact.

    `log` (a `logging.Logger` or a `str` callable) gets one line per epoch; `on_batch(epoch,
    batch_index, loss)` is called after every step (epoch from 1, batch index from 0) and
    `before_batch(epoch, batch_index)` before it (e.g. to pick a supernet's path).

    `path_plan(epoch, batch_index)` (instead of `before_batch`) makes a step run the batch through several
    paths of a weight-sharing model: it returns callables that each activate one path, and the step runs
    them in order, each path's loss divided by their number, gradients summed, then one optimizer step. With
    `inplace_distill` every path after the first learns from the first path's detached outputs through
    `distillation_loss` (`cfg.distill_alpha`, `cfg.distill_temperature`) instead of the labels alone. A
    step's reported loss and accuracy are then the cross-entropy and accuracy of its last path (in a
    sandwich plan, the uniformly sampled one, so the history compares with single-path training).
    `progress` shows a rich progress bar when stderr is a terminal. On return `model` is in
    eval mode.

    With `parallel` (a `DataParallel`), this call is one of `parallel.world_size` processes that
    train together: each steps on its shard of every batch with gradients combined across processes,
    epoch statistics are over the whole data, and only the writer writes files. `fingerprint_extra`
    (JSON-ready) joins the checkpoint's fingerprint, so a resume must match it too.
    """
    augment = _resolve_augment(cfg, augment_default)
    _check_datasets(train_ds, val_ds)
    if path_plan is not None and before_batch is not None:
        raise ConfigError("give fit either before_batch or path_plan, not both")
    if inplace_distill and path_plan is None:
        raise ConfigError("inplace_distill needs a path_plan (it distils later paths from the first)")
    if teacher is not None:
        teacher.eval()
    fingerprint = {**_fingerprint(cfg, augment, train_ds, val_ds, teacher), **(fingerprint_extra or {})}
    ckpt_path = Path(run_dir) / CHECKPOINT_NAME if run_dir is not None else None
    writer = parallel is None or parallel.is_writer
    with _torch_settings(cfg):
        run = _Run(model, train_ds, cfg, augment, teacher, parallel, inplace_distill=inplace_distill)
        if ckpt_path is not None and ckpt_path.exists():
            run.restore(load_checkpoint(ckpt_path), fingerprint, str(ckpt_path))
        else:
            _seed_everything(cfg.seed)
        if run.epoch < cfg.epochs:
            _train(run, val_ds, ckpt_path if writer else None, fingerprint, progress=progress, log=log,
                   on_batch=on_batch, before_batch=before_batch, path_plan=path_plan)
    model.eval()
    result = TrainResult(tuple(run.history), sum(h.seconds for h in run.history), run.resumed_from_epoch)
    if writer and run_dir is not None and (result.resumed_from_epoch < cfg.epochs
                                           or not _outputs_exist(Path(run_dir))):
        _write_outputs(Path(run_dir), model, cfg, result)
    return result


class _Run:
    """The mutable state of one run: model, loader, optimizer, schedule and history."""

    def __init__(self, model: nn.Module, train_ds: ArrayDataset, cfg: TrainConfig, augment: str,
                 teacher: nn.Module | None, parallel: DataParallel | None = None, *,
                 inplace_distill: bool = False) -> None:
        self.model, self.cfg, self.teacher, self.parallel = model, cfg, teacher, parallel
        self.inplace_distill = inplace_distill
        n, world = len(train_ds), 1 if parallel is None else parallel.world_size
        # A last batch (or shard) of one example would break BatchNorm in train mode: drop it.
        self.loader = BatchLoader(train_ds, cfg.batch_size, shuffle=True, augment=augment, seed=cfg.seed,
                                  drop_last=n > 1 and 0 < n % cfg.batch_size < 2 * world)
        self.optimizer = build_optimizer(model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, len(self.loader))
        self.history: list[EpochStats] = []
        self.resumed_from_epoch = 0
        self.device = next((p.device for p in model.parameters()), torch.device("cpu"))

    @property
    def epoch(self) -> int:
        """Epochs completed so far."""
        return len(self.history)

    def state_dict(self, fingerprint: dict[str, Any]) -> dict[str, Any]:
        return {
            "epoch": self.epoch, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "history": [h.to_dict() for h in self.history],
            "rng": get_rng_state(self.loader.generator), "config": to_dict(self.cfg), "fingerprint": fingerprint,
        }

    def restore(self, ckpt: dict[str, Any], fingerprint: dict[str, Any], source: str) -> None:
        """Continue from checkpoint `ckpt` after checking that it belongs to this run."""
        check_fingerprint(ckpt["fingerprint"], fingerprint, source=source)
        check_state_compatible(self.model, ckpt["model"], source=source)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.history = [EpochStats.from_dict(h) for h in ckpt["history"]]
        if len(self.history) != ckpt["epoch"]:
            raise DataError(f"{source}: holds {len(self.history)} epoch records for epoch {ckpt['epoch']}")
        set_rng_state(ckpt["rng"], self.loader.generator)
        self.resumed_from_epoch = self.epoch

    def loss(self, logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
             teacher_logits: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-entropy, or with a teacher the distillation loss against `teacher_logits` (computed from `x`
        when not given)."""
        cfg = self.cfg
        if self.teacher is None:
            return F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
        if teacher_logits is None:
            teacher_logits = self.teacher_logits(x)
        return distillation_loss(logits, teacher_logits, y, alpha=cfg.distill_alpha,
                                 temperature=cfg.distill_temperature, label_smoothing=cfg.label_smoothing)

    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's outputs for `x`, without gradients (only called when there is a teacher)."""
        assert self.teacher is not None
        with torch.no_grad():
            return self.teacher(x)

    def step(self, x: torch.Tensor, y: torch.Tensor,
             paths: Sequence[Callable[[], object]] = ()) -> tuple[float, int, int]:
        """One optimisation step (through each of `paths` in turn when given, see `fit`); returns (summed
        loss, correct predictions, examples) of this process's batch."""
        n_batch = len(y)
        if self.parallel is not None:
            x, y = self.parallel.shard(x, y)
        self.optimizer.zero_grad(set_to_none=True)
        if not paths:
            logits = self.model(x)
            _check_logits(logits, self.loader.ds.num_classes)
            loss = self.loss(logits, x, y)
            loss.backward()
        else:
            loss, logits = self._multi_path(x, y, paths)
        if self.parallel is not None:
            self.parallel.sync_grads(self.model, len(y) / n_batch)
        self.optimizer.step()
        self.scheduler.step()
        return loss.item() * len(y), int((logits.argmax(dim=1) == y).sum().item()), len(y)

    def _multi_path(self, x: torch.Tensor, y: torch.Tensor,
                    paths: Sequence[Callable[[], object]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and backward through every path (losses / len(paths)); the last path's cross-entropy and
        (detached) logits. A teacher runs once per batch, whatever the number of paths."""
        cfg, first = self.cfg, None
        teacher_logits = None if self.teacher is None else self.teacher_logits(x)  # the first path always needs it
        for activate in paths:
            activate()
            logits = self.model(x)
            _check_logits(logits, self.loader.ds.num_classes)
            if first is not None and self.inplace_distill:
                loss = distillation_loss(logits, first, y, alpha=cfg.distill_alpha,
                                         temperature=cfg.distill_temperature, label_smoothing=cfg.label_smoothing)
            else:
                loss = self.loss(logits, x, y, teacher_logits)
            if first is None:
                first = logits.detach()
            (loss / len(paths)).backward()
        last = logits.detach()
        return F.cross_entropy(last, y), last

    def current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])


def _train(run: _Run, val_ds: ArrayDataset | None, ckpt_path: Path | None, fingerprint: dict[str, Any], *,
           progress: bool, log: Log | None, on_batch: OnBatch | None, before_batch: BeforeBatch | None,
           path_plan: PathPlan | None) -> None:
    cfg = run.cfg
    with _progress_bar(progress) as bar:
        for epoch in range(run.epoch + 1, cfg.epochs + 1):
            stats = _run_epoch(run, epoch, val_ds, bar, on_batch, before_batch, path_plan)
            run.history.append(stats)
            _emit(log, _format_epoch(stats, cfg.epochs))
            if ckpt_path is not None and (epoch % cfg.checkpoint_every_epochs == 0 or epoch == cfg.epochs):
                save_checkpoint(ckpt_path, run.state_dict(fingerprint))


def _run_epoch(run: _Run, epoch: int, val_ds: ArrayDataset | None, bar: Progress,
               on_batch: OnBatch | None, before_batch: BeforeBatch | None, path_plan: PathPlan | None) -> EpochStats:
    """Train one epoch, then validate; raise `ConfigError` if the loss is not finite."""
    start = time.perf_counter()
    loss_sum, correct, n, lr = 0.0, 0, 0, run.current_lr()
    task = bar.add_task(f"epoch {epoch}/{run.cfg.epochs}", total=len(run.loader), status="")
    run.model.train()
    for i, (x, y) in enumerate(run.loader):
        if before_batch is not None:
            before_batch(epoch, i)
        lr = run.current_lr()
        paths = path_plan(epoch, i) if path_plan is not None else ()
        batch_loss, batch_correct, batch_n = run.step(x.to(run.device), y.to(run.device), paths)
        loss_sum, correct, n = loss_sum + batch_loss, correct + batch_correct, n + batch_n
        bar.update(task, advance=1, status=f"loss {loss_sum / n:.4f}")
        if on_batch is not None:
            on_batch(epoch, i, batch_loss / batch_n)
    bar.remove_task(task)
    if run.parallel is not None:
        run.parallel.sync_buffers(run.model)
        loss_sum, total_correct, total_n = run.parallel.sum([loss_sum, correct, n])
        correct, n = round(total_correct), round(total_n)
    train_seconds = time.perf_counter() - start
    if not math.isfinite(loss_sum):
        raise ConfigError(f"training diverged in epoch {epoch} (loss {loss_sum / n}); lower lr (now {run.cfg.lr})")
    val = evaluate(run.model, val_ds, batch_size=run.cfg.eval_batch_size) if val_ds is not None else None
    return EpochStats(epoch=epoch, train_loss=loss_sum / n, train_acc=correct / n,
                      val_loss=val["loss"] if val else None, val_acc=val["accuracy"] if val else None, lr=lr,
                      seconds=time.perf_counter() - start, images_per_s=n / max(train_seconds, 1e-9))


def _write_outputs(run_dir: Path, model: nn.Module, cfg: TrainConfig, result: TrainResult) -> None:
    save_weights(model, run_dir / MODEL_NAME)
    RunRecord(stage=RECORD_STAGE, config=to_dict(cfg), metrics=result.to_dict(),
              artefacts={"checkpoint": CHECKPOINT_NAME, "model": MODEL_NAME}, machine=machine_info()).save(run_dir)


def _outputs_exist(run_dir: Path) -> bool:
    return (run_dir / MODEL_NAME).is_file() and (run_dir / f"{RECORD_STAGE}.json").is_file()


def _resolve_augment(cfg: TrainConfig, augment_default: str) -> str:
    check_choice("augment_default", augment_default, AUGMENTATIONS)
    return augment_default if cfg.augment == "auto" else cfg.augment


def _check_datasets(train_ds: ArrayDataset, val_ds: ArrayDataset | None) -> None:
    if len(train_ds) == 0:
        raise DataError(f"{train_ds.name}/{train_ds.split}: training set is empty")
    if val_ds is not None and (val_ds.input_shape, val_ds.num_classes) != (train_ds.input_shape,
                                                                          train_ds.num_classes):
        raise DataError(f"val_ds {val_ds.input_shape} with {val_ds.num_classes} classes does not match "
                        f"train_ds {train_ds.input_shape} with {train_ds.num_classes} classes")


def _describe(ds: ArrayDataset | None) -> str | None:
    if ds is None:
        return None
    return f"{ds.name}/{ds.split} n={len(ds)} shape={list(ds.input_shape)} classes={ds.num_classes}"


def _fingerprint(cfg: TrainConfig, augment: str, train_ds: ArrayDataset, val_ds: ArrayDataset | None,
                 teacher: nn.Module | None) -> dict[str, Any]:
    """Flat, JSON-ready identity of a run: what a checkpoint must match to be resumed."""
    teacher_desc = None if teacher is None else f"{sum(p.numel() for p in teacher.parameters())} parameters"
    return {**cfg.fingerprint(), "resolved_augment": augment, "train_data": _describe(train_ds),
            "val_data": _describe(val_ds), "teacher": teacher_desc}


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


@contextlib.contextmanager
def _torch_settings(cfg: TrainConfig) -> Iterator[None]:
    """Set thread count and deterministic mode for the run; restore the caller's afterwards."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def _progress_bar(enabled: bool) -> Progress:
    console = Console(stderr=True)
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    TextColumn("{task.fields[status]}"), console=console, transient=True,
                    disable=not (enabled and console.is_terminal))


def _format_epoch(s: EpochStats, epochs: int) -> str:
    val = f" val_loss {s.val_loss:.4f} val_acc {s.val_acc:.4f}" if s.val_loss is not None else ""
    return (f"epoch {s.epoch}/{epochs} train_loss {s.train_loss:.4f} train_acc {s.train_acc:.4f}{val} "
            f"lr {s.lr:.3g} {s.seconds:.1f} s {s.images_per_s:.0f} images/s")


def _emit(log: Log | None, line: str) -> None:
    if isinstance(log, logging.Logger):
        log.info(line)
    elif log is not None:
        log(line)
