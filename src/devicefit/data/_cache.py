"""Cache of decoded arrays as `.npz`, keyed by source files (path, size, mtime) and decode options.

Entries are written atomically; an unreadable or incomplete entry is rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import warnings
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from devicefit.core import atomic_open

from ._paths import cache_dir

__all__ = ["cache_key", "cached_arrays"]

CACHE_VERSION = 1  # bump when a decoder's output changes for the same input


def _fingerprint(path: Path) -> list[Any]:
    """(path, size, mtime) of a file; for a folder, the file count, total size and newest mtime."""
    path = path.resolve()
    if path.is_dir():
        stats = [p.stat() for p in path.rglob("*") if p.is_file()]
        return [str(path), len(stats), sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)]
    st = path.stat()
    return [str(path), st.st_size, st.st_mtime_ns]


def cache_key(sources: Iterable[Path], options: dict[str, Any]) -> str:
    """A short stable hash of the source fingerprints and the decode options."""
    payload = {"v": CACHE_VERSION, "sources": [_fingerprint(Path(s)) for s in sources], "options": options}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _read(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """The arrays of a cache entry, or None if it is missing, corrupt or lacks a key."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in keys}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def cached_arrays(tag: str, sources: Iterable[Path], options: dict[str, Any], keys: tuple[str, ...],
                  build: Callable[[], dict[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], Path]:
    """Return `build()`'s arrays (named `keys`), from `<cache_dir>/datasets/<tag>-<key>.npz` when valid.

    Returns (arrays, cache path). A corrupt or incomplete entry is rebuilt; a cache dir that cannot
    be written only costs a warning (the arrays are still returned).
    """
    path = cache_dir() / "datasets" / f"{tag}-{cache_key(sources, options)}.npz"
    hit = _read(path, keys)
    if hit is not None:
        return hit, path
    built = build()
    try:
        with atomic_open(path, "wb") as f:
            np.savez(f, **built)
    except OSError as e:
        warnings.warn(f"could not write the dataset cache {path}: {e}", stacklevel=2)
    return built, path
