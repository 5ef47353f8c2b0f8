"""The train job: dataset + zoo model + training recipe → trained weights, test accuracy and cost.

This is what `devicefit train` and (until the end-to-end pipeline lands) `make demo` run.
Artefacts in the run directory: config.json, spec.json, log.txt, checkpoint.pt, model.pt, train.json
(the loop's record) and job.json (test accuracy, cost, data source, history).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devicefit.core import ArchSpec, RunRecord, atomic_write_json, check_range, machine_info, to_dict
from devicefit.train import TrainConfig

from ._run_dir import claim_run_dir, run_log

__all__ = ["JOB_STAGE", "DataConfig", "ModelConfig", "TrainJobConfig", "default_run_dir", "run_train_job"]

JOB_STAGE = "job"  # <run_dir>/job.json: the job's metrics; train.json is the training loop's own record


@dataclass(frozen=True)
class DataConfig:
    """Which dataset to train on. `data_dir` None → `DEVICEFIT_DATA_DIR`, else the bundled subset.
    `options` go to the loader (e.g. `features = "mfcc"` for fsdd). `val_fraction` of the train
    split is held out for validation; the test split is only used for the final evaluation."""

    name: str = "cifar10"
    data_dir: str | None = None
    val_fraction: float = 0.1
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_range("data.val_fraction", self.val_fraction, 0.0, 0.5, inclusive=True)


@dataclass(frozen=True)
class ModelConfig:
    """A zoo model by registry name; `params` override its defaults (e.g. `width_mult`).
    `num_classes` and `input_shape` are taken from the dataset."""

    name: str = "mobilenet_v2"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainJobConfig:
    """A whole train job. `run_dir` None → `runs/<model>-<data>-<config hash>`."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run_dir: str | None = None
    weight_bits: int = 8
    act_bits: int = 8


def default_run_dir(cfg: TrainJobConfig) -> Path:
    body = to_dict(dataclasses.replace(cfg, run_dir=None))
    tag = ArchSpec("job", body).spec_id[:8]
    return Path("runs") / f"{cfg.model.name}-{cfg.data.name}-{tag}"


def run_train_job(cfg: TrainJobConfig, *, progress: bool = True,
                  echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train `cfg.model` on `cfg.data` and evaluate on the test split; return the metrics.

    A finished run directory with the same config returns its stored metrics (`job.json`) at
    once; an interrupted one resumes from its last checkpoint. Log lines go to
    `<run_dir>/log.txt` and, when given, to `echo`.
    """
    from devicefit import data as D
    from devicefit import models as M
    from devicefit import train as T

    # Bake $DEVICEFIT_DATA_DIR into the config: the run (and its cache) depends on which copy is read.
    # (an explicit data_dir is kept as given, so the same command line finds its run again).
    if cfg.data.data_dir is None and (from_env := D.resolve_data_dir(None)) is not None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, data_dir=str(from_env)))
    run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)
    config = to_dict(cfg)
    claim_run_dir(run_dir, "train", config)
    record_path = run_dir / f"{JOB_STAGE}.json"
    if record_path.exists():
        return {**RunRecord.load(record_path).metrics, "run_dir": str(run_dir), "cached": True}
    log = run_log(run_dir, echo)

    started = time.perf_counter()
    train_full = D.load_dataset(cfg.data.name, "train", cfg.data.data_dir, **cfg.data.options)
    test = D.load_dataset(cfg.data.name, "test", cfg.data.data_dir, **cfg.data.options)
    train, val = D.split_train_val(train_full, cfg.data.val_fraction, seed=cfg.train.seed)
    log("data %s: %s; train %d / val %d / test %d", cfg.data.name, train_full.source, len(train), len(val),
             len(test))
    spec = M.default_spec(cfg.model.name, num_classes=train.num_classes, input_shape=train.input_shape,
                          **cfg.model.params)
    atomic_write_json(run_dir / "spec.json", spec.to_dict())
    model = M.build(spec)
    cost = M.cost(spec, weight_bits=cfg.weight_bits, act_bits=cfg.act_bits)
    log("model %s: %d params, %d MACs", spec, cost.params, cost.macs)
    augment = D.DATASETS.get(cfg.data.name).augment
    result = T.fit(model, train, cfg.train, val_ds=val if len(val) else None, run_dir=run_dir,
                   augment_default=augment, progress=progress, log=log)
    test_metrics = T.evaluate(model, test, batch_size=cfg.train.eval_batch_size)
    metrics = {
        "model": str(spec),
        "spec": spec.to_dict(),
        "data_source": train_full.source,
        "n_train": len(train), "n_val": len(val), "n_test": len(test),
        "test_accuracy": test_metrics["accuracy"],
        "test_loss": test_metrics["loss"],
        "val_accuracy": result.history[-1].val_acc if result.history else None,
        "train_seconds": result.train_seconds,
        "job_seconds": time.perf_counter() - started,
        "params": cost.params,
        "macs": cost.macs,
        "param_bytes": cost.param_bytes,
        "weight_bits": cfg.weight_bits,
        "peak_activation_bytes": cost.peak_activation_bytes,
        "act_bits": cfg.act_bits,
        "history": [h.to_dict() for h in result.history],
    }
    RunRecord(JOB_STAGE, config, metrics, {"model": "model.pt", "spec": "spec.json", "log": "log.txt"},
              machine_info()).save(run_dir)
    log("test accuracy %.4f", test_metrics["accuracy"])
    return {**metrics, "run_dir": str(run_dir), "cached": False}
