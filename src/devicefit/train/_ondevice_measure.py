"""Measured training memory: exact saved-activation bytes through autograd saved-tensor hooks, the peak of
torch's CPU allocator over one training step (profiler memory events), and the peak resident memory of one
training step in a fresh subprocess against the same process just before it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from devicefit.core import ConfigError, Measurement, UnsupportedOpError, machine_info

from ._config import TrainConfig
from ._optim import build_optimizer

__all__ = ["RSS_METHOD", "measure_step_rss", "saved_activation_bytes", "step_allocator_peak_bytes"]

RSS_METHOD = ("peak RSS (VmHWM, reset through /proc/self/clear_refs) of the second training step of a fresh "
              "subprocess minus its RSS just before that step (likewise for a no-grad forward as the inference "
              "baseline); glibc mmap and trim thresholds at 4 KiB, so every buffer of a page or more is its own "
              "mapping, returned to the OS when freed (RSS follows live tensors, not heap reuse); 1 torch thread")


def _storage_key(t: torch.Tensor) -> tuple[int, int]:
    s = t.untyped_storage()
    return s.data_ptr(), s.nbytes()


def saved_activation_bytes(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                           label_smoothing: float = 0.0) -> int:
    """Bytes of the distinct storages autograd saves for backward during `cross_entropy(model(x), y)`.

    Every tensor handed to the pack hook counts once per storage (views of one buffer share it);
    storages of the model's parameters and buffers are left out (they are weights, not activations).
    The graph is built and dropped without running backward; the model is used in its current mode.
    """
    own = {_storage_key(t)[0] for t in [*model.parameters(), *model.buffers()]}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr, nbytes = _storage_key(t)
        if ptr and ptr not in own:
            storages[ptr] = max(storages.get(ptr, 0), nbytes)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = F.cross_entropy(model(x), y, label_smoothing=label_smoothing)
    del loss  # saved tensors stayed alive (and their addresses unique) until here
    return sum(storages.values())


def step_allocator_peak_bytes(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                              cfg: TrainConfig | None = None) -> int:
    """Peak bytes held by torch's CPU allocator during one training step (forward, cross-entropy, backward,
    optimizer step) of `model` as it stands, above what was held when the step began: the running sum of
    the profiler's memory events. A warm-up step runs first (optimizer state, lazily made buffers), then
    gradients are freed; the model's weights and optimizer state change. Unlike RSS, this sees only
    allocations made through torch (oneDNN's included), page rounding and malloc overhead excluded."""
    opt = build_optimizer(model, cfg or TrainConfig())

    def step() -> None:
        F.cross_entropy(model(x), y).backward()
        opt.step()

    model.train()
    step()
    opt.zero_grad(set_to_none=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    held = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        held += event.nbytes()
        peak = max(peak, held)
    opt.zero_grad(set_to_none=True)
    return peak


_CHILD = r"""
import json, sys
import torch, torch.nn.functional as F
torch.set_num_threads(1)
from devicefit.train import TrainConfig, build_optimizer

def status():
    rows = [l.split() for l in open("/proc/self/status") if l.startswith(("VmHWM:", "VmRSS:"))]
    return {r[0][:-1]: int(r[1]) * 1024 for r in rows}

path, args = sys.argv[1], json.loads(sys.argv[2])
model = torch.load(path, weights_only=False)
model.train()
opt = build_optimizer(model, TrainConfig(**args["train"]))
g = torch.Generator().manual_seed(0)
x = torch.randn((args["batch_size"], *args["input_shape"]), generator=g)
y = torch.randint(0, args["num_classes"], (args["batch_size"],), generator=g)

def step():
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()

def measured(fn):
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status()["VmRSS"]
    fn()
    return before, status()["VmHWM"]

step()  # warm-up: lazily created kernels and optimizer state
opt.zero_grad(set_to_none=True)
with torch.no_grad():
    model(x)  # warm-up of the inference path

def infer():
    with torch.no_grad():
        model(x)

infer_before, infer_peak = measured(infer)
before, peak = measured(step)
print(json.dumps({"before_rss_bytes": before, "peak_rss_bytes": peak, "infer_before_rss_bytes": infer_before,
                  "infer_peak_rss_bytes": infer_peak}))
"""


def measure_step_rss(model: nn.Module, input_shape: Sequence[int], num_classes: int, *, batch_size: int,
                     cfg: TrainConfig | None = None, repeats: int = 3) -> Measurement:
    """Peak-RSS growth of one training step (forward, cross-entropy, backward, optimizer step) of a copy of
    `model` in a fresh subprocess, relative to the same process just before the step (after a warm-up
    step, with gradients freed), median of `repeats` processes, in bytes. Linux only (needs
    /proc/self/clear_refs). The figure includes allocator and kernel scratch, so it is an upper view of
    `TrainMemoryReport.step_bytes`."""
    if not Path("/proc/self/clear_refs").exists():
        raise UnsupportedOpError("measure_step_rss needs Linux /proc/self/clear_refs to reset the peak RSS")
    if not isinstance(repeats, int) or repeats < 1:
        raise ConfigError(f"repeats must be an int >= 1, got {repeats!r}")
    cfg = cfg or TrainConfig()
    args = {"batch_size": batch_size, "input_shape": list(input_shape), "num_classes": num_classes,
            "train": {"optimizer": cfg.optimizer, "lr": cfg.lr, "momentum": cfg.momentum,
                      "nesterov": cfg.nesterov, "weight_decay": cfg.weight_decay}}
    with tempfile.TemporaryDirectory(prefix="devicefit-rss-") as tmp:
        path = Path(tmp) / "model.pt"
        torch.save(model, path)
        runs = [_child(path, args) for _ in range(repeats)]
    deltas = sorted(r["peak_rss_bytes"] - r["before_rss_bytes"] for r in runs)
    infer = sorted(r["infer_peak_rss_bytes"] - r["infer_before_rss_bytes"] for r in runs)
    method = {"what": RSS_METHOD, "batch_size": batch_size, "repeats": repeats, "optimizer": cfg.optimizer,
              "momentum": cfg.momentum, "inference_delta_bytes": infer[len(infer) // 2], "runs": runs}
    spread = {"min": float(deltas[0]), "max": float(deltas[-1])}
    return Measurement("train_step_peak_rss_delta", float(deltas[len(deltas) // 2]), "bytes", method, spread,
                       {**machine_info(), "threads": 1})


def _child(path: Path, args: dict[str, Any]) -> dict[str, int]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "4096",
           "MALLOC_TRIM_THRESHOLD_": "4096"}  # every tensor of a page or more is its own mapping
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(path), json.dumps(args)], capture_output=True,
                          text=True, env=env, timeout=300)
    if proc.returncode != 0:
        tail = " ".join(proc.stderr.split())[-600:]
        raise UnsupportedOpError(f"training-step memory probe process failed: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
