"""Supernet training by single-path sampling, in one process or in several through `torch.distributed`
(gloo on CPU, launched with `torchrun`): `fit_supernet`, the path samplings it offers (`PATH_SAMPLINGS`), the
data-parallel hooks it gives `fit`, and a command line entry point.

Path samplings (registered in `PATH_SAMPLINGS`):

- "uniform": one uniformly drawn path per step (SPOS, HSCoNAS).
- "sandwich": per step the largest path, the smallest path and `n_random` uniform paths on the same batch,
  their gradients averaged, the smaller paths distilled in place from the largest one's outputs (BigNAS's
  sandwich rule with in-place distillation). A step costs about 2 + `n_random` single-path steps.

Launch, from a shell (two processes on this machine; the batch size is the global one)::

    python -m torch.distributed.run --nproc_per_node 2 -m devicefit.train._distributed \\
        --space mbconv --data cifar10 --epochs 5 --batch-size 64 --limit 1000 --run-dir runs/supernet

or without `torch.distributed.run` for one process. Every process loads the same data and runs the same
seeded loader; each steps on its own shard of every batch, all draw the same path for a step (from
`np.random.default_rng([seed_paths, epoch, batch])`), gradients are combined into those of the whole batch's
mean loss, and BatchNorm running statistics are averaged across processes at the end of every epoch, so the
weights stay identical in every process. Process 0 alone writes `checkpoint.pt`, `model.pt` and
`train.json` to the run directory; launching again on the same directory resumes after the last
checkpointed epoch (with the same number of processes). Training statistics (loss, accuracy) are over the
whole data. Each process computes BatchNorm batch statistics over its own shard only, so a run with N
processes follows a slightly different trajectory from a one-process run with the same global batch.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from devicefit.core import ArchSpec, ConfigError, DevicefitError, Registry, check_int
from devicefit.data import DATASETS, ArrayDataset, load_dataset
from devicefit.space import get_space

from ._config import TrainConfig
from ._loop import Log, OnBatch, PathPlan, fit
from ._result import TrainResult

__all__ = ["PATH_SAMPLINGS", "PathSampling", "TorchDistributed", "fit_supernet", "main", "state_digest"]


@dataclasses.dataclass(frozen=True)
class PathSampling:
    """How a supernet step picks its paths: `make_plan(supernet, seed_paths, n_random)` returns `fit`'s path plan,
    drawing the random paths of step (epoch, batch) from `np.random.default_rng([seed_paths, epoch, batch])`, so
    a resumed run and every process of a distributed one draw the same paths; `multi_path`: a step runs several
    paths (with in-place distillation from the first) rather than one; `describe`: recorded in the checkpoint's
    fingerprint."""

    make_plan: Callable[[Any, int, int], PathPlan]
    multi_path: bool
    describe: str


PATH_SAMPLINGS: Registry[PathSampling] = Registry("path sampling")


def _activate(supernet: Any, spec: ArchSpec) -> Callable[[], object]:
    return lambda: supernet.set_active(spec)


def _uniform(supernet: Any, seed_paths: int, n_random: int) -> PathPlan:
    def plan(epoch: int, batch: int) -> list[Callable[[], object]]:
        return [lambda: supernet.sample(np.random.default_rng([seed_paths, epoch, batch]))]

    return plan


def _sandwich(supernet: Any, seed_paths: int, n_random: int) -> PathPlan:
    space = getattr(supernet, "space", None)
    if not (callable(getattr(space, "largest", None)) and callable(getattr(space, "smallest", None))):
        raise ConfigError(f"path_sampling 'sandwich' needs a space with largest() and smallest(); "
                          f"{getattr(space, 'name', type(supernet).__name__)!r} has none")
    ends = [_activate(supernet, space.largest()), _activate(supernet, space.smallest())]

    def plan(epoch: int, batch: int) -> list[Callable[[], object]]:
        rng = np.random.default_rng([seed_paths, epoch, batch])
        return ends + [_activate(supernet, space.sample(rng)) for _ in range(n_random)]

    return plan


PATH_SAMPLINGS.add("uniform", PathSampling(_uniform, multi_path=False, describe="uniform single-path"))
PATH_SAMPLINGS.add("sandwich", PathSampling(_sandwich, multi_path=True, describe="sandwich"))


class TorchDistributed:
    """The `DataParallel` hooks of `fit` over an initialised `torch.distributed` process group (CPU tensors,
    gloo). Shards are contiguous slices of the batch that differ in size by at most one example."""

    def __init__(self) -> None:
        if not dist.is_initialized():
            raise ConfigError("TorchDistributed needs an initialised torch.distributed process group")
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.is_writer = self.rank == 0

    def shard(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor_split(x, self.world_size)[self.rank], torch.tensor_split(y, self.world_size)[self.rank]

    def sync_grads(self, model: nn.Module, share: float) -> None:
        """Sum over processes of `share` × gradient, for the parameters that have one; every process must
        have gradients for the same parameters (the same path), else `DevicefitError`."""
        params = [p for p in model.parameters() if p.requires_grad]
        has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.int32)
        dist.all_reduce(has_grad)
        if bool(((has_grad != 0) & (has_grad != self.world_size)).any()):
            raise DevicefitError(f"rank {self.rank}: processes computed gradients for different parameters; "
                                 "every process must run the same path in a step")
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads]) * share
        dist.all_reduce(flat)
        _unflatten_into(flat, grads)

    def sync_buffers(self, model: nn.Module) -> None:
        """Average the floating-point buffers (BatchNorm running statistics) over processes."""
        bufs = [b for b in model.buffers() if b.is_floating_point()]
        if bufs:
            flat = torch.cat([b.reshape(-1) for b in bufs])
            dist.all_reduce(flat)
            _unflatten_into(flat / self.world_size, bufs)

    def sum(self, values: Sequence[float]) -> list[float]:
        t = torch.tensor([float(v) for v in values], dtype=torch.float64)
        dist.all_reduce(t)
        return t.tolist()

    def broadcast_state_(self, model: nn.Module) -> None:
        """Copy process 0's parameters and buffers into every process's `model` (in place)."""
        with torch.no_grad():
            for t in model.state_dict().values():
                dist.broadcast(t, src=0)

    def check_in_sync(self, model: nn.Module) -> None:
        """Raise `DevicefitError` unless every process holds bit-identical weights and buffers."""
        digest = torch.tensor(list(bytes.fromhex(state_digest(model))), dtype=torch.uint8)
        gathered = [torch.empty_like(digest) for _ in range(self.world_size)]
        dist.all_gather(gathered, digest)
        differ = [r for r, d in enumerate(gathered) if not torch.equal(d, gathered[0])]
        if differ:
            raise DevicefitError(f"weights of process(es) {differ} differ from process 0's after training")


def _unflatten_into(flat: torch.Tensor, targets: Sequence[torch.Tensor]) -> None:
    offset = 0
    with torch.no_grad():
        for t in targets:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()


def state_digest(model: nn.Module) -> str:
    """SHA-256 (hex) over the names and bytes of `model.state_dict()`: equal digests, identical weights."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@contextlib.contextmanager
def _process_group() -> Iterator[TorchDistributed | None]:
    """The data-parallel hooks when launched as one of several processes (`WORLD_SIZE` > 1, as `torchrun`
    sets it, or a group initialised by the caller), else None. A group started here (gloo) ends here."""
    started = False
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("gloo")
        started = True
    try:
        yield TorchDistributed() if dist.is_initialized() and dist.get_world_size() > 1 else None
        if started:  # all ranks reach the teardown together: a rank that tore gloo down while its peer still
            dist.barrier()  # held the connection aborted that peer ("terminate called ...") in ~2 of 5 launches
    finally:
        if started:
            dist.destroy_process_group()


def fit_supernet(supernet: nn.Module, train_ds: ArrayDataset, cfg: TrainConfig, *,
                 run_dir: str | os.PathLike[str] | None = None, progress: bool = True, log: Log | None = None,
                 seed_paths: int = 0, augment_default: str = "none", on_batch: OnBatch | None = None,
                 teacher: nn.Module | None = None, path_sampling: str = "uniform", n_random: int = 1) -> TrainResult:
    """Train weight-sharing `supernet` in place by `path_sampling` (a `PATH_SAMPLINGS` name); return the history.

    "uniform": before step (epoch, batch) the path `supernet.sample(np.random.default_rng([seed_paths, epoch,
    batch]))` is activated, so a resumed run draws the same paths. "sandwich" (a supernet with `space` and
    `set_active`, whose space has `largest()` and `smallest()`): the step runs the largest path, the smallest
    and `n_random` (>= 1) paths `supernet.space.sample` draws from that generator, with in-place distillation
    from the largest (`fit`'s `path_plan`); its reported loss and accuracy are those of the last uniform path.
    Everything else is `fit` (seeding, checkpoints in `run_dir`, resume, `log`, `on_batch`, `augment_default`,
    distillation from `teacher`). Under `torchrun` (`WORLD_SIZE` > 1) or in an initialised process group this
    call is one of several processes: it needs `cfg.batch_size` >= 2 × processes, starts from process 0's
    weights, trains on its shard of every batch with gradients summed to those of the whole batch, logs and
    writes files from process 0 only, and ends with weights identical in every process (checked;
    `DevicefitError` if not). The checkpoint's fingerprint includes `seed_paths`, the path sampling (and
    `n_random` for a multi-path one), the supernet class (and its `weight_sharing`, where it has one) and the
    number of processes.
    """
    sample = getattr(supernet, "sample", None)
    if not callable(sample):
        raise ConfigError(f"supernet must offer sample(rng) (a weight-sharing supernet), got {type(supernet).__name__}")
    sampling = PATH_SAMPLINGS.get(path_sampling)
    check_int("n_random", n_random, 1)
    plan = sampling.make_plan(supernet, seed_paths, n_random)
    with _process_group() as parallel:
        world = 1 if parallel is None else parallel.world_size
        if cfg.batch_size < 2 * world:
            raise ConfigError(f"batch_size must be >= 2 x processes ({2 * world}) so every shard holds two "
                              f"examples for BatchNorm, got {cfg.batch_size}")
        if parallel is not None:
            parallel.broadcast_state_(supernet)

        def before_batch(epoch: int, batch: int) -> None:
            for activate in plan(epoch, batch):
                activate()

        multi = sampling.multi_path
        writer = parallel is None or parallel.is_writer
        extra: dict[str, Any] = {"supernet": type(supernet).__name__, "path_sampling": sampling.describe,
                                 "seed_paths": seed_paths, "world_size": world}
        if multi:
            extra["n_random"] = n_random
        if hasattr(supernet, "weight_sharing"):  # a checkpoint of the other layout cannot be resumed
            extra["weight_sharing"] = supernet.weight_sharing
        result = fit(supernet, train_ds, cfg, run_dir=run_dir, progress=progress and writer,
                     log=log if writer else None, augment_default=augment_default, on_batch=on_batch,
                     before_batch=None if multi else before_batch, path_plan=plan if multi else None,
                     inplace_distill=multi, parallel=parallel, fingerprint_extra=extra, teacher=teacher)
        if parallel is not None:
            parallel.check_in_sync(supernet)
    return result


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m devicefit.train._distributed",
                                description="Train a weight-sharing supernet (one or several processes).")
    p.add_argument("--space", default="mbconv", help="a registered space with a supernet (mbconv, mbconv_kws, "
                                                     "resnet_cifar)")
    p.add_argument("--data", default="cifar10", help="dataset name (bundled subset without --data-dir)")
    p.add_argument("--data-dir", default=None, help="folder with the full dataset copies")
    p.add_argument("--limit", type=int, default=None, help="train on the first LIMIT examples only")
    p.add_argument("--run-dir", required=True, help="checkpoint/output folder; an existing one resumes")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64, help="global batch size (split over processes)")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seed-paths", type=int, default=0, help="seed of the path sampling")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--path-sampling", default="uniform", choices=PATH_SAMPLINGS.names(),
                   help="paths per step: one uniform path, or the sandwich rule (largest + smallest + --n-random)")
    p.add_argument("--n-random", type=int, default=1, help="uniform paths per sandwich step")
    return p


def main(argv: Sequence[str] | None = None) -> TrainResult:
    """Parse `argv`, load the data, build the supernet, `fit_supernet`; process 0 prints one JSON line
    (final metrics, epochs resumed from, run dir). Errors print `error: ...` and exit with status 2."""
    args = _parser().parse_args(argv)
    try:
        train_ds = _load(args.data, args.data_dir, args.limit, args.seed)
        space = get_space(args.space)  # unknown → ConfigError listing the registered spaces
        if not hasattr(space, "supernet"):
            raise ConfigError(f"--space {args.space!r} has no weight-sharing supernet; use mbconv, mbconv_kws or "
                              "resnet_cifar")
        torch.manual_seed(args.seed)
        supernet = space.supernet(num_classes=train_ds.num_classes, input_shape=train_ds.input_shape)
        cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                          threads=args.threads, warmup_epochs=min(1.0, float(args.epochs)))
        result = fit_supernet(supernet, train_ds, cfg, run_dir=args.run_dir, log=print,
                              seed_paths=args.seed_paths, augment_default=DATASETS.get(args.data).augment,
                              path_sampling=args.path_sampling, n_random=args.n_random)
    except DevicefitError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({**result.final, "resumed_from_epoch": result.resumed_from_epoch,
                          "run_dir": str(args.run_dir)}))
    return result


def _load(name: str, data_dir: str | None, limit: int | None, seed: int) -> ArrayDataset:
    """The train split, or `limit` examples of it drawn at random with `seed` (kept in their order)."""
    ds = load_dataset(name, "train", data_dir)
    if limit is None or limit >= len(ds):
        return ds
    if limit < 2:
        raise ConfigError(f"--limit must be >= 2, got {limit}")
    return ds.subset(np.sort(np.random.default_rng(seed).permutation(len(ds))[:limit]))


if __name__ == "__main__":
    main()
