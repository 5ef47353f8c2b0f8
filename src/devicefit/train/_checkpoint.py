"""Checkpoints and weight files: atomic writes, `weights_only=True` reads, compatibility checks.

Everything stored is a tensor or a plain container of str/int/float/bool/None, so loading
never unpickles code. RNG states (torch, numpy, Python `random`, a loader's generator) are
stored as tensors so a resumed run continues the exact random streams it was killed in.
"""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from devicefit.core import ConfigError, DataError, atomic_open

__all__ = [
    "CHECKPOINT_FORMAT",
    "check_fingerprint",
    "check_state_compatible",
    "get_rng_state",
    "load_checkpoint",
    "load_weights",
    "save_checkpoint",
    "save_weights",
    "set_rng_state",
]

CHECKPOINT_FORMAT = "devicefit.train.checkpoint/1"
_MAX_LISTED = 5


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """Write `payload` (tensors and plain containers) to `path` atomically (temp file + rename)."""
    with atomic_open(path, "wb") as f:
        torch.save({"format": CHECKPOINT_FORMAT, **payload}, f)
    return Path(path)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` (CPU tensors, `weights_only=True`)."""
    data = _torch_load(path)
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise DataError(f"{path}: not a devicefit training checkpoint (format {found!r}, "
                        f"expected {CHECKPOINT_FORMAT!r})")
    return data


def save_weights(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write `model.state_dict()` (as CPU tensors) to `path` atomically."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_open(path, "wb") as f:
        torch.save(state, f)
    return Path(path)


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load a `save_weights` file into `model` (in place, returned). Keys and shapes must match
    exactly, else `ConfigError` lists the first differing keys; nothing is loaded then."""
    state = _torch_load(path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(f"{path}: not a weights file (expected a dict of tensors)")
    check_state_compatible(model, state, source=str(path))
    model.load_state_dict(state)
    return model


def check_state_compatible(model: nn.Module, state: dict[str, torch.Tensor], *, source: str) -> None:
    """Raise `ConfigError` naming missing, unexpected and reshaped keys of `state` vs `model`."""
    own = model.state_dict()
    problems = [f"missing {k}" for k in own if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in own]
    problems += [f"{k}: {tuple(state[k].shape)} in file, {tuple(v.shape)} in model"
                 for k, v in own.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if problems:
        more = f" (and {len(problems) - _MAX_LISTED} more)" if len(problems) > _MAX_LISTED else ""
        raise ConfigError(f"{source} does not fit this model: {'; '.join(problems[:_MAX_LISTED])}{more}")


def check_fingerprint(stored: dict[str, Any], current: dict[str, Any], *, source: str) -> None:
    """Raise `ConfigError` naming every key whose stored and current values differ."""
    keys = sorted(set(stored) | set(current))
    diffs = [f"{k}: {stored.get(k, '<absent>')!r} in checkpoint, {current.get(k, '<absent>')!r} now"
             for k in keys if stored.get(k, "<absent>") != current.get(k, "<absent>")]
    if diffs:
        raise ConfigError(f"{source} was written by a different run ({'; '.join(diffs)}); "
                          "use a new run directory or delete the checkpoint to start over")


def get_rng_state(loader_generator: torch.Generator) -> dict[str, Any]:
    """The global torch, numpy and Python RNG states and the loader's, as tensors."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "loader": loader_generator.get_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }


def set_rng_state(state: dict[str, Any], loader_generator: torch.Generator) -> None:
    """Restore what `get_rng_state` captured."""
    torch.set_rng_state(state["torch"])
    loader_generator.set_state(state["loader"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"].tolist()), p["gauss_next"]))


def _torch_load(path: str | os.PathLike[str]) -> Any:
    if not Path(path).is_file():
        raise DataError(f"{path}: file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
        raise DataError(f"{path}: cannot be read as a weights-only torch file ({e})") from None
