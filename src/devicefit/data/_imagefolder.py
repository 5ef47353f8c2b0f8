"""Class-folder image trees (`<split>/<class>/*.png|jpg`) read from a folder or a zip, decoded once and cached;
the generic `imagefolder` dataset (CIFAR-10's JPEG layout reuses the same reader).
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from devicefit.core import ConfigError, DataError, check_choice

from ._archive import member_reader, open_zip
from ._cache import cached_arrays
from ._dataset import ArrayDataset, DatasetInfo, register_dataset

__all__ = ["IMAGE_SUFFIXES", "cached_class_tree", "channel_stats", "load_imagefolder", "read_class_tree"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
COLORS = ("auto", "rgb", "gray")
_GRAY_MODES = ("1", "L", "I", "I;16", "F")

# (class name, display name for errors, bytes reader)
_Item = tuple[str, str, Callable[[], bytes]]


def _zip_items(zip_path: Path, split: str) -> tuple[list[_Item], zipfile.ZipFile]:
    """Image members `[...]/<split>/<class>/<file>` of a zip, sorted by class then name."""
    zf, infos = open_zip(zip_path)
    names = [info.filename for info in infos]
    items = []
    for name in sorted(names):
        parts = PurePosixPath(name).parts
        if len(parts) >= 3 and parts[-3] == split and name.lower().endswith(IMAGE_SUFFIXES):
            items.append((parts[-2], f"{zip_path}:{name}", member_reader(zf, zip_path, name)))
    return sorted(items, key=lambda it: (it[0], it[1])), zf


def _dir_items(split_dir: Path) -> list[_Item]:
    """Image files `<split_dir>/<class>/<file>`, sorted by class then name."""
    items = []
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        for f in sorted(class_dir.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                items.append((class_dir.name, str(f), f.read_bytes))
    return items


def _decode(item: _Item, color: str, image_size: tuple[int, int] | None) -> np.ndarray:
    """One image as uint8 (C, H, W)."""
    _, display, read = item
    try:
        with Image.open(io.BytesIO(read())) as im:
            mode = "L" if color == "gray" or (color == "auto" and im.mode in _GRAY_MODES) else "RGB"
            im = im.convert(mode)
            if image_size is not None:
                im = im.resize((image_size[1], image_size[0]), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{display}: cannot decode image ({e})") from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _stack(items: list[_Item], color: str, image_size: tuple[int, int] | None) -> np.ndarray:
    """Decode all items into (N, C, H, W); every image must have the first image's shape."""
    first = _decode(items[0], color, image_size)
    if color == "auto":  # fix the channel count from the first image for the rest
        color = "gray" if first.shape[0] == 1 else "rgb"
    x = np.empty((len(items), *first.shape), dtype=np.uint8)
    x[0] = first
    for i, item in enumerate(items[1:], start=1):
        img = _decode(item, color, image_size)
        if img.shape != first.shape:
            raise DataError(f"{item[1]}: image shape (C, H, W) {img.shape} differs from {first.shape} of "
                            f"{items[0][1]}; all images must match, or pass image_size=(H, W) to resize")
        x[i] = img
    return x


def read_class_tree(source: Path, split: str, classes: tuple[str, ...] | None = None, *, color: str = "auto",
                    image_size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Decode `source` (a zip holding `<split>/<class>/*` or the split folder itself) into (x, y, classes).

    x uint8 (N, C, H, W); y int64 indices into `classes` (sorted folder names when None).
    A class folder not in `classes` raises `DataError`.
    """
    zf = None
    if source.is_dir():
        items = _dir_items(source)
    else:
        items, zf = _zip_items(source, split)
    try:
        if not items:
            raise DataError(f"{source}: no {'/'.join(IMAGE_SUFFIXES)} images found under {split}/<class>/")
        found = sorted({it[0] for it in items})
        classes = tuple(found) if classes is None else classes
        unknown = [c for c in found if c not in classes]
        if unknown:
            raise DataError(f"{source}: class folder(s) {unknown} are not among the expected classes {list(classes)}")
        y = np.array([classes.index(it[0]) for it in items], dtype=np.int64)
        return _stack(items, color, image_size), y, classes
    finally:
        if zf is not None:
            zf.close()


def cached_class_tree(tag: str, source: Path, split: str, classes: tuple[str, ...] | None = None, *,
                      color: str = "auto", image_size: tuple[int, int] | None = None,
                      ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], Path]:
    """`read_class_tree` through the decoded-array cache; returns (x, y, classes, cache path)."""
    options = {"split": split, "classes": classes, "color": color, "image_size": image_size}

    def build() -> dict[str, np.ndarray]:
        x, y, cls = read_class_tree(source, split, classes, color=color, image_size=image_size)
        return {"x": x, "y": y, "classes": np.array(cls, dtype=str)}

    arrays, path = cached_arrays(tag, [source], options, ("x", "y", "classes"), build)
    return arrays["x"], arrays["y"], tuple(str(c) for c in arrays["classes"]), path


def channel_stats(x: np.ndarray, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images (N, C, H, W) on the [0, 1] scale, in float64 chunks."""
    total, total_sq = np.zeros(x.shape[1]), np.zeros(x.shape[1])
    for i in range(0, len(x), chunk):
        block = x[i:i + chunk].astype(np.float64) / 255.0
        total += block.sum(axis=(0, 2, 3))
        total_sq += (block ** 2).sum(axis=(0, 2, 3))
    count = max(1, x.shape[0] * x.shape[2] * x.shape[3])
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))
    return tuple(float(m) for m in mean), tuple(max(float(s), 1e-6) for s in std)


def _split_source(root: Path, split: str) -> Path | None:
    """`root/<split>/` or `root/<split>.zip`, whichever exists."""
    for p in (root / split, root / f"{split}.zip"):
        if p.exists():
            return p
    return None


def _image_size(value: int | tuple[int, int] | list[int] | None) -> tuple[int, int] | None:
    if value is None:
        return None
    size = (value, value) if isinstance(value, int) else tuple(value)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ConfigError(f"image_size must be a positive int or (H, W), got {value!r}")
    return (int(size[0]), int(size[1]))


def load_imagefolder(split: str = "train", data_dir: str | os.PathLike[str] | None = None, *,
                     path: str | os.PathLike[str] | None = None, image_size: int | tuple[int, int] | None = None,
                     color: str = "auto") -> ArrayDataset:
    """Images under `path/<split>/<class>/*.{png,jpg,jpeg}` (or `path/<split>.zip`) as a uint8 dataset.

    Classes are the sorted folder names of the train split (else of `split`); images are resized
    only when `image_size` is given. mean/std are per-channel over the train split (else `split`), on [0, 1].
    """
    check_choice("color", color, COLORS)
    if path is None and data_dir is None:
        raise ConfigError("imagefolder needs path=ROOT (a folder holding <split>/<class>/*.png|jpg)")
    root = Path(path if path is not None else data_dir).expanduser()  # type: ignore[arg-type]
    source = _split_source(root, split)
    if source is None:
        raise DataError(f"imagefolder: neither {root / split}/ nor {root / split}.zip exists")
    size = _image_size(image_size)
    train_src = _split_source(root, "train")
    classes, stats_x = None, None
    if train_src is not None and split != "train":
        stats_x, _, classes, _ = cached_class_tree("imagefolder", train_src, "train", color=color, image_size=size)
    x, y, classes, cache_path = cached_class_tree("imagefolder", source, split, classes, color=color, image_size=size)
    mean, std = channel_stats(x if stats_x is None else stats_x)
    return ArrayDataset(name="imagefolder", split=split, x=x, y=y, classes=classes, source=str(source),
                        mean=mean, std=std, meta={"cache_path": str(cache_path), "root": str(root)})


register_dataset(DatasetInfo(
    name="imagefolder", load=load_imagefolder, input_shape=(3, 0, 0), num_classes=0,
    description="generic root/<split>/<class>/*.png|jpg tree (option path=ROOT, image_size=(H, W))",
    license="whatever the images' owner grants", splits=("train", "val", "test"), augment="crop_flip",
))
