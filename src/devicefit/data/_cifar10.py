"""CIFAR-10 from the official python-pickle batches (folder or `cifar-10-python.tar.gz`) or from the
JPEG class-folder layout (`train.zip`/`test.zip` or unzipped folders), including the bundled subset.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from devicefit.core import DataError

from ._cache import cached_arrays
from ._dataset import ArrayDataset, DatasetInfo, register_dataset
from ._imagefolder import cached_class_tree
from ._paths import Located, bundled_dir, find_dataset, first_existing

__all__ = ["CIFAR10_CLASSES", "CIFAR10_MEAN", "CIFAR10_STD", "load_cifar10", "read_cifar_batch"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# Per-channel mean and std of the 50k training images on the [0, 1] scale (the usual published values).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
TARBALL = "cifar-10-python.tar.gz"
BATCH_DIR = "cifar-10-batches-py"
_BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
_EXPECTED = ("cifar-10-batches-py/, cifar-10-python.tar.gz, or JPEGs in train.zip/test.zip "
             "or train/<class>/, test/<class>/")
_SUBDIRS = ("cifar10-jpg", "cifar10", "cifar-10")
_ALLOWED_GLOBALS = {  # what CIFAR batches pickle: dicts, lists, bytes (via _codecs in protocol 2) and arrays
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global except numpy array reconstruction (no code execution)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")


def read_cifar_batch(data: bytes, display: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode one pickled batch into x uint8 (N, 3, 32, 32) and y int64 (N,); errors name `display`."""
    try:
        batch = _NumpyOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # any failure to unpickle means a corrupt or foreign file
        raise DataError(f"{display}: not a CIFAR-10 python batch ({type(e).__name__}: {e})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"{display}: expected a dict with b'data' and b'labels', got {type(batch).__name__}")
    x = np.asarray(batch[b"data"])
    y = np.asarray(batch[b"labels"], dtype=np.int64)
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072 or len(y) != len(x):
        raise DataError(f"{display}: expected data uint8 (N, 3072) and N labels, got data {x.dtype} {x.shape} "
                        f"and {len(y)} labels")
    if len(y) and (y.min() < 0 or y.max() > 9):
        raise DataError(f"{display}: labels must be in 0..9, got {y.min()}..{y.max()}")
    return x.reshape(-1, 3, 32, 32), y


def _batches_from_dir(folder: Path, split: str) -> dict[str, np.ndarray]:
    parts = []
    for name in _BATCHES[split]:
        path = folder / name
        if not path.is_file():
            raise DataError(f"{folder}: batch file {name} is missing (expected {', '.join(_BATCHES[split])})")
        parts.append(read_cifar_batch(path.read_bytes(), str(path)))
    return {"x": np.concatenate([p[0] for p in parts]), "y": np.concatenate([p[1] for p in parts])}


def _batches_from_tarball(path: Path, split: str) -> dict[str, np.ndarray]:
    wanted = set(_BATCHES[split])
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    try:
        with tarfile.open(path, "r|gz") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in wanted:
                    data = tar.extractfile(member).read()  # type: ignore[union-attr]
                    found[base] = read_cifar_batch(data, f"{path}:{member.name}")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(f"{path}: truncated or corrupt tar.gz archive ({type(e).__name__}: {e}); "
                        f"re-download it") from None
    missing = sorted(wanted - set(found))
    if missing:
        raise DataError(f"{path}: archive lacks batch file(s) {missing}")
    parts = [found[n] for n in _BATCHES[split]]
    return {"x": np.concatenate([p[0] for p in parts]), "y": np.concatenate([p[1] for p in parts])}


def _probe(split: str) -> Callable[[Path], Located | None]:
    """A `locate` probe for one split: pickle batches, then the tarball, then the JPEG layout."""

    def probe(folder: Path) -> Located | None:
        if (folder / BATCH_DIR / "data_batch_1").is_file():
            return Located("batches", folder / BATCH_DIR)
        if (folder / "data_batch_1").is_file() and (folder / "test_batch").is_file():
            return Located("batches", folder)
        if (folder / TARBALL).is_file():
            return Located("tarball", folder / TARBALL)
        jpeg = first_existing(folder, (f"{split}.zip", f"{split}/airplane"))
        if jpeg is not None:
            return Located("jpeg", folder / f"{split}.zip" if jpeg.suffix == ".zip" else folder / split)
        return None
    return probe


def _read(found: Located, split: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(x, y, cache path or '') of one split from a located copy."""
    if found.kind == "jpeg":
        x, y, _, cache_path = cached_class_tree("cifar10-jpeg", found.path, split, CIFAR10_CLASSES, color="rgb")
        shape = x.shape[1:]
        if shape != (3, 32, 32):
            raise DataError(f"{found.path}: CIFAR-10 images must be 3x32x32, got {shape}")
        return x, y, str(cache_path)
    if found.kind == "tarball":
        arrays, cache_path = cached_arrays("cifar10-tarball", [found.path], {"split": split}, ("x", "y"),
                                           lambda: _batches_from_tarball(found.path, split))
        return arrays["x"], arrays["y"], str(cache_path)
    arrays = _batches_from_dir(found.path, split)
    return arrays["x"], arrays["y"], ""


def load_cifar10(split: str = "train", data_dir: str | os.PathLike[str] | None = None) -> ArrayDataset:
    """CIFAR-10 `split` ("train" or "test"): x uint8 (N, 3, 32, 32), y int64 in 0..9, standard class order.

    Reads from `data_dir` (or `$DEVICEFIT_DATA_DIR`) when set, else the bundled 5,000/1,000 JPEG subset.
    """
    found, source = find_dataset("cifar10", data_dir, Located("jpeg", bundled_dir("cifar10") / f"{split}.zip"),
                                 "CIFAR-10 (JPEG)", _SUBDIRS, _probe(split), _EXPECTED)
    x, y, cache_path = _read(found, split)
    return ArrayDataset(name="cifar10", split=split, x=x, y=y, classes=CIFAR10_CLASSES, source=source,
                        mean=CIFAR10_MEAN, std=CIFAR10_STD, meta={"format": found.kind, "cache_path": cache_path})


register_dataset(DatasetInfo(
    name="cifar10", load=load_cifar10, input_shape=(3, 32, 32), num_classes=10,
    description="CIFAR-10: 32x32 colour images, 10 classes (50,000 train / 10,000 test; bundled 5,000 / 1,000)",
    license="no formal licence; cite Krizhevsky, 'Learning Multiple Layers of Features from Tiny Images', 2009",
    augment="crop_flip",
))
