"""The public entry points over the dataset registry: `load_dataset` and `prepare` (what
`devicefit data ls|prepare` calls).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from devicefit.core import ConfigError, DataError

from ._dataset import DATASETS, ArrayDataset
from ._download import DOWNLOADS, download
from ._paths import DATA_DIR_ENV, cache_dir, resolve_data_dir

__all__ = ["load_dataset", "prepare"]

_REQUIRED_SPLITS = ("train", "test")


def load_dataset(name: str, split: str = "train", data_dir: str | os.PathLike[str] | None = None,
                 **options: Any) -> ArrayDataset:
    """Load split `split` of registered dataset `name`.

    `data_dir` (else `$DEVICEFIT_DATA_DIR`) points at the full copies; without one the bundled subset
    is read. `options` go to the dataset's loader (e.g. `features="logmel"` for fsdd, `path=` for
    imagefolder). Unknown names, splits or options raise `ConfigError`.
    """
    info = DATASETS.get(name)
    if split not in info.splits:
        raise ConfigError(f"split must be one of {', '.join(info.splits)} for dataset {name!r}, got {split!r}")
    try:
        return info.load(split=split, data_dir=data_dir, **options)
    except TypeError as e:
        if "unexpected keyword argument" in str(e):
            raise ConfigError(f"dataset {name!r}: {e}") from None
        raise


def _summary(ds: ArrayDataset) -> dict[str, Any]:
    counts = np.bincount(ds.y, minlength=ds.num_classes)
    return {"count": len(ds), "shape": list(ds.x.shape), "dtype": str(ds.x.dtype), "source": ds.source,
            "class_counts": {c: int(n) for c, n in zip(ds.classes, counts, strict=True)},
            "cache_path": ds.meta.get("cache_path") or None}


def prepare(name: str, data_dir: str | os.PathLike[str] | None = None, download: bool = False,
            **options: Any) -> dict[str, Any]:
    """Make dataset `name` ready to train on and summarise it (for `devicefit data prepare`).

    With `download`, fetch the official files into the data dir first (a data dir is then required).
    Each split is loaded once, which fills the decode cache. Returns a JSON-ready dict: name, data_dir,
    source (of the first split), cache_dir, and per split its source, count, shape, dtype, class counts
    and cache file.
    """
    info = DATASETS.get(name)
    if download:
        target = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV) or None
        if target is None:
            raise DataError(f"--download needs a data dir to write {name} into: pass --data-dir DIR "
                            f"or set {DATA_DIR_ENV}=DIR")
        Path(target).expanduser().mkdir(parents=True, exist_ok=True)
        _download(name, Path(target).expanduser())
    splits = {}
    for split in info.splits:
        try:
            splits[split] = _summary(load_dataset(name, split, data_dir, **options))
        except DataError:
            if split in _REQUIRED_SPLITS:
                raise  # an optional split (e.g. an image folder's val/) may be absent
    root = resolve_data_dir(data_dir)
    first = next(iter(splits.values()), {})
    return {"name": name, "source": first.get("source"), "description": info.description, "license": info.license,
            "data_dir": None if root is None else str(root), "cache_dir": str(cache_dir()), "splits": splits}


def _download(name: str, root: os.PathLike[str]) -> None:
    if name not in DOWNLOADS:
        raise ConfigError(f"dataset {name!r} has no download; downloadable: {', '.join(sorted(DOWNLOADS))}")
    download(name, root)
