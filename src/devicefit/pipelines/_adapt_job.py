"""The adapt job: a finished train run + new data → a network fine-tuned on the device's memory budget.

The new data (a split of a dataset, e.g. held-out speakers) is divided, per class and seeded, into an
adaptation part (seen by training and by the selector's probes) and a held-out part (accuracy before and
after). The source run is only read; results go to a new run directory: config.json, spec.json, log.txt,
model.pt (adapted weights, same architecture) and adapt.json.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from devicefit.core import (
    ArchSpec,
    BudgetError,
    ConfigError,
    RunRecord,
    atomic_write_json,
    check_choice,
    check_range,
    from_dict,
    machine_info,
    read_json,
    to_dict,
)
from devicefit.train import TrainConfig

from ._run_dir import claim_run_dir, run_log
from ._train_job import DataConfig, TrainJobConfig

__all__ = ["ADAPT_SCHEMES", "ADAPT_STAGE", "AdaptJobConfig", "default_adapt_dir", "run_adapt_job", "split_new_data"]

ADAPT_STAGE = "adapt"
ADAPT_SCHEMES = ("auto", "full", "last-k", "bias", "sparse")
_ADAPT_TRAIN = TrainConfig(epochs=10, batch_size=8, optimizer="sgd", lr=0.01, momentum=0.9, warmup_epochs=0.0,
                           weight_decay=0.0, label_smoothing=0.0, threads=1)


@dataclass(frozen=True)
class AdaptJobConfig:
    """An adaptation of `source_run` (a finished `devicefit train` directory).

    data: the new data (None = the source run's dataset and loader options) and `split` of it;
    `adapt_fraction` of each class adapts, the rest is held out for the before/after accuracy, and
    `select_val_fraction` of the adaptation part scores the selector's probes. scheme: one of
    `ADAPT_SCHEMES` ("auto" = the budgeted selector); budget_kib: the training-memory budget (saved
    activations + gradients + optimizer state at `train.batch_size`), required for "auto", checked for
    the others. last_k, layers, channel_ratio, bias_layers, mask_bits, bn_stats: see `SchemeConfig`
    (bn_stats "running" adapts "full"/"last-k" with BatchNorm at its running statistics).
    """

    source_run: str = ""
    data: DataConfig | None = None
    split: str = "test"
    adapt_fraction: float = 0.2
    select_val_fraction: float = 0.3
    scheme: str = "auto"
    budget_kib: float | None = None
    last_k: int = 1
    layers: tuple[int, ...] = ()
    channel_ratio: float = 1.0
    bias_layers: int = -1
    mask_bits: int = 1
    bn_stats: str = "batch"
    probe_epochs: int = 2
    train: TrainConfig = _ADAPT_TRAIN
    run_dir: str | None = None

    def __post_init__(self) -> None:
        if not self.source_run:
            raise ConfigError("source_run must name a finished train run directory, got ''")
        check_choice("scheme", self.scheme, ADAPT_SCHEMES)
        check_range("adapt_fraction", self.adapt_fraction, 0.0, 1.0)
        check_range("select_val_fraction", self.select_val_fraction, 0.0, 1.0)
        if self.budget_kib is not None and not self.budget_kib > 0:
            raise ConfigError(f"budget_kib must be > 0, got {self.budget_kib!r}")
        if self.scheme == "auto" and self.budget_kib is None:
            raise ConfigError("scheme 'auto' needs budget_kib (the training-memory budget in KiB)")

    @property
    def budget_bytes(self) -> int | None:
        return None if self.budget_kib is None else int(self.budget_kib * 1024)


def default_adapt_dir(cfg: AdaptJobConfig) -> Path:
    """`<source_run>-adapt-<scheme>-<config hash>` next to the source run."""
    tag = ArchSpec("adapt", to_dict(dataclasses.replace(cfg, run_dir=None))).spec_id[:8]
    source = Path(cfg.source_run)
    return source.parent / f"{source.name}-adapt-{cfg.scheme}-{tag}"


def split_new_data(ds: Any, adapt_fraction: float, seed: int) -> tuple[Any, Any]:
    """(adapt, held-out) parts of `ds`: `adapt_fraction` of each class (at least one example) adapts."""
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(ds.y):
        members = np.flatnonzero(ds.y == c)
        picked.append(rng.permutation(members)[: max(1, round(adapt_fraction * len(members)))])
    chosen = np.sort(np.concatenate(picked))
    rest = np.setdiff1d(np.arange(len(ds)), chosen)
    if len(rest) == 0:
        raise ConfigError(f"adapt_fraction {adapt_fraction} leaves no held-out examples of {ds.name}/{ds.split}")
    return ds.subset(chosen, f"{ds.split}/adapt"), ds.subset(rest, f"{ds.split}/heldout")


def _load_source(source: Path) -> tuple[TrainJobConfig, ArchSpec, Any]:
    from devicefit import models as M
    from devicefit import train as T

    for name in ("config.json", "spec.json", "model.pt"):
        if not (source / name).is_file():
            raise ConfigError(f"source_run {source} is not a finished train run: {name} is missing")
    stamp = read_json(source / "config.json")
    if stamp.get("kind") != "train":
        raise ConfigError(f"source_run {source} holds a {stamp.get('kind')!r} run, expected a 'train' run")
    train_cfg = from_dict(TrainJobConfig, stamp["config"])
    spec = ArchSpec.from_dict(read_json(source / "spec.json"))
    model = T.load_weights(M.build(spec), source / "model.pt").eval()
    return train_cfg, spec, model


def _scheme_for(cfg: AdaptJobConfig) -> Any:
    from devicefit.train import SchemeConfig

    return SchemeConfig(cfg.scheme, last_k=cfg.last_k, layers=cfg.layers, channel_ratio=cfg.channel_ratio,
                        bias_layers=cfg.bias_layers, mask_bits=cfg.mask_bits, bn_stats=cfg.bn_stats)


def _choose(cfg: AdaptJobConfig, model: Any, adapt_ds: Any, shape: tuple[int, ...], classes: int,
            log: Callable[..., None]) -> tuple[Any, dict[str, Any]]:
    """The scheme to run: the selector's pick for "auto", else the named one checked against the budget."""
    from devicefit import train as T

    if cfg.scheme == "auto":
        probe_ds, val_ds = split_new_data(adapt_ds, 1.0 - cfg.select_val_fraction, cfg.train.seed)
        sel = T.BudgetedSelector(cfg.budget_bytes or 0, cfg.train, probe_epochs=cfg.probe_epochs,
                                 mask_bits=cfg.mask_bits)
        sel.fit(model, probe_ds, val_ds, input_shape=shape, num_classes=classes)
        log("selector picked %s (%d budget bytes, smallest feasible %d)", sel.scheme_, sel.memory_.budget_bytes,
            sel.minimal_bytes_)
        return sel.scheme_, {"candidates": [c.to_dict() for c in sel.candidates_],
                             "minimal_bytes": sel.minimal_bytes_}
    scheme = _scheme_for(cfg)
    need = T.modelled_memory(T.prepare(model, scheme), shape, cfg.train).budget_bytes
    if cfg.budget_bytes is not None and need > cfg.budget_bytes:
        raise BudgetError(f"scheme {cfg.scheme!r} needs {need} bytes of training memory at batch "
                          f"{cfg.train.batch_size}, over budget_kib {cfg.budget_kib} ({cfg.budget_bytes} bytes); "
                          f"use --scheme auto to fit the budget")
    return scheme, {}


def run_adapt_job(cfg: AdaptJobConfig, *, echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Adapt the source run's network to the new data under `cfg`; return the metrics (see module doc).

    A finished run directory with the same config returns its stored metrics at once. Raises
    `ConfigError` for a missing or mismatched source run, `DataError` for new data of another shape or
    with classes the network lacks, `BudgetError` for a budget no scheme fits.
    """
    from devicefit import data as D
    from devicefit import train as T

    source = Path(cfg.source_run)
    train_cfg, spec, model = _load_source(source)
    data_cfg = cfg.data or train_cfg.data
    run_dir = Path(cfg.run_dir) if cfg.run_dir else default_adapt_dir(cfg)
    config = to_dict(cfg)
    claim_run_dir(run_dir, ADAPT_STAGE, config)
    if (run_dir / f"{ADAPT_STAGE}.json").exists():
        return {**RunRecord.load(run_dir / f"{ADAPT_STAGE}.json").metrics, "run_dir": str(run_dir), "cached": True}
    log = run_log(run_dir, echo)

    started = time.perf_counter()
    new = D.load_dataset(data_cfg.name, cfg.split, data_cfg.data_dir, **data_cfg.options)
    shape, classes = tuple(spec.as_kwargs()["input_shape"]), int(spec.as_kwargs()["num_classes"])
    T.check_adaptation_data(shape, classes, new)
    adapt_ds, heldout = split_new_data(new, cfg.adapt_fraction, cfg.train.seed)
    log("new data %s/%s (%s): adapt %d / held-out %d", new.name, cfg.split, new.source, len(adapt_ds), len(heldout))
    before = T.evaluate(model, heldout)
    scheme, selection = _choose(cfg, model, adapt_ds, shape, classes, log)
    adapted, result = T.adapt(model, adapt_ds, scheme, cfg.train, input_shape=shape, num_classes=classes, log=log)
    after = T.evaluate(adapted, heldout)
    T.save_weights(adapted, run_dir / "model.pt")
    atomic_write_json(run_dir / "spec.json", spec.to_dict())
    metrics = {"source_run": str(source), "model": str(spec), "data_source": new.source, "split": cfg.split,
               "n_adapt": len(adapt_ds), "n_heldout": len(heldout), "accuracy_before": before["accuracy"],
               "accuracy_after": after["accuracy"], "scheme": to_dict(scheme), "memory": result.memory.to_dict(),
               "budget_bytes": cfg.budget_bytes, "train_seconds": result.train.train_seconds,
               "job_seconds": time.perf_counter() - started, **selection}
    RunRecord(ADAPT_STAGE, config, metrics, {"model": "model.pt", "spec": "spec.json", "log": "log.txt"},
              machine_info()).save(run_dir)
    log("held-out accuracy %.4f → %.4f", before["accuracy"], after["accuracy"])
    return {**metrics, "run_dir": str(run_dir), "cached": False}
