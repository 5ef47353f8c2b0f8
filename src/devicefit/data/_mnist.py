"""MNIST from the IDX files (`train-images-idx3-ubyte[.gz]` ...) or `mnist.npz` (x_train, y_train,
x_test, y_test), including the bundled 10,000 / 2,000 subset.
"""

from __future__ import annotations

import gzip
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from devicefit.core import DataError

from ._dataset import ArrayDataset, DatasetInfo, register_dataset
from ._paths import Located, bundled_dir, find_dataset

__all__ = ["MNIST_CLASSES", "MNIST_MEAN", "MNIST_STD", "load_mnist", "read_idx"]

MNIST_CLASSES = tuple(str(d) for d in range(10))
MNIST_MEAN = (0.1307,)  # over the 60k training images on [0, 1]
MNIST_STD = (0.3081,)
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_MAGIC_IMAGES, _MAGIC_LABELS = 0x00000803, 0x00000801  # 2051, 2049: uint8 data with 3 / 1 dimensions
_EXPECTED = "mnist.npz or train-images-idx3-ubyte[.gz] and the other IDX files"
_SUBDIRS = ("mnist", "MNIST/raw", "MNIST")


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read ({type(e).__name__}: {e}); re-copy or re-download it") from None


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file (raw or .gz) as a uint8 array; the magic number and the byte count must match the header."""
    data = _read_bytes(path)
    ndim = magic & 0xFF
    header_bytes = 4 + 4 * ndim
    if len(data) < header_bytes:
        raise DataError(f"{path}: file too short for an IDX header ({len(data)} bytes)")
    (found,) = struct.unpack(">I", data[:4])
    if found != magic:
        raise DataError(f"{path}: IDX magic number must be {magic:#010x}, got {found:#010x}")
    dims = struct.unpack(f">{ndim}I", data[4:header_bytes])
    expected = header_bytes + int(np.prod(dims))
    if len(data) != expected:
        raise DataError(f"{path}: header says dims {dims} = {expected} bytes, file has {len(data)} bytes "
                        f"(truncated or corrupt)")
    return np.frombuffer(data, dtype=np.uint8, offset=header_bytes).reshape(dims)


def _idx_path(folder: Path, stem: str) -> Path | None:
    """`stem`, `stem.gz`, or the `train-images.idx3-ubyte` spelling, whichever exists."""
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, f"{stem}.gz", dotted, f"{dotted}.gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _read_idx_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    paths = [_idx_path(folder, stem) for stem in IDX_FILES[split]]
    if None in paths:
        raise DataError(f"{folder}: MNIST IDX files for {split!r} are missing (expected {', '.join(IDX_FILES[split])}"
                        f"[.gz])")
    x = read_idx(paths[0], _MAGIC_IMAGES)  # type: ignore[arg-type]
    y = read_idx(paths[1], _MAGIC_LABELS)  # type: ignore[arg-type]
    if x.shape[1:] != (28, 28) or len(y) != len(x):
        raise DataError(f"{paths[0]}: expected N images of 28x28 matching {len(y)} labels in {paths[1]}, "
                        f"got {x.shape}")
    return x, y


def _read_npz_split(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            x, y = npz[f"x_{split}"], npz[f"y_{split}"]
    except KeyError as e:
        raise DataError(f"{path}: missing array {e}; expected x_train, y_train, x_test, y_test") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"{path}: not a readable .npz ({type(e).__name__}: {e})") from None
    if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28) or y.shape != (len(x),):
        raise DataError(f"{path}: x_{split} must be uint8 (N, 28, 28) with N labels, got {x.dtype} {x.shape} "
                        f"and y {y.shape}")
    return x, y


def _probe(folder: Path) -> Located | None:
    if (folder / "mnist.npz").is_file():
        return Located("npz", folder / "mnist.npz")
    if _idx_path(folder, IDX_FILES["train"][0]) or _idx_path(folder, IDX_FILES["test"][0]):
        return Located("idx", folder)
    return None


def load_mnist(split: str = "train", data_dir: str | os.PathLike[str] | None = None) -> ArrayDataset:
    """MNIST `split`: x uint8 (N, 1, 28, 28) (white digit on black), y int64 in 0..9.

    Reads from `data_dir` (or `$DEVICEFIT_DATA_DIR`) when set, else the bundled 10,000/2,000 subset.
    """
    found, source = find_dataset("mnist", data_dir, Located("npz", bundled_dir("mnist") / "mnist.npz"), "MNIST",
                                 _SUBDIRS, _probe, _EXPECTED)
    x, y = _read_npz_split(found.path, split) if found.kind == "npz" else _read_idx_split(found.path, split)
    if len(y) and int(y.max()) > 9:
        raise DataError(f"{found.path}: MNIST labels must be in 0..9, got max {int(y.max())}")
    return ArrayDataset(name="mnist", split=split, x=np.ascontiguousarray(x[:, None]), y=y.astype(np.int64),
                        classes=MNIST_CLASSES, source=source, mean=MNIST_MEAN, std=MNIST_STD,
                        meta={"format": found.kind})


register_dataset(DatasetInfo(
    name="mnist", load=load_mnist, input_shape=(1, 28, 28), num_classes=10,
    description="MNIST handwritten digits, 28x28 grey (60,000 train / 10,000 test; bundled 10,000 / 2,000)",
    license="commonly distributed under CC BY-SA 3.0; cite LeCun et al., 1998",
    augment="crop",
))
