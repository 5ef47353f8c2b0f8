"""Where dataset files come from: the data-dir setting, the cache-dir setting, the bundled subsets,
and the search of a data dir's conventional sub-folders (with an error that lists every place looked).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from devicefit.core import DataError

__all__ = [
    "CACHE_DIR_ENV",
    "DATA_DIR_ENV",
    "bundled_dir",
    "bundled_manifest",
    "bundled_source",
    "cache_dir",
    "find_dataset",
    "locate",
    "resolve_data_dir",
]

DATA_DIR_ENV = "DEVICEFIT_DATA_DIR"
CACHE_DIR_ENV = "DEVICEFIT_CACHE_DIR"
_BUNDLED = Path(__file__).resolve().parent / "bundled"

T = TypeVar("T")


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The data dir to read full datasets from: `data_dir`, else env `DEVICEFIT_DATA_DIR`, else None.

    None means "use the bundled subset". A given dir that does not exist raises `DataError`.
    """
    raw = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV) or None
    if raw is None:
        return None
    path = Path(raw).expanduser()
    if not path.is_dir():
        origin = "data_dir" if data_dir is not None else f"${DATA_DIR_ENV}"
        raise DataError(f"{origin} {str(path)!r} is not a directory")
    return path.resolve()


def cache_dir() -> Path:
    """Folder for decoded-array caches: env `DEVICEFIT_CACHE_DIR`, default `~/.cache/devicefit`."""
    raw = os.environ.get(CACHE_DIR_ENV) or None
    return Path(raw).expanduser() if raw else Path.home() / ".cache" / "devicefit"


def bundled_dir(name: str) -> Path:
    """Folder of the subset of dataset `name` shipped inside the package."""
    return _BUNDLED / name


def bundled_manifest() -> dict[str, Any]:
    """The bundled subsets' manifest (counts per split, titles, sha256), or {} if it is missing."""
    path = _BUNDLED / "manifest.json"
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return {}


def bundled_source(name: str, fallback_title: str) -> str:
    """`ArrayDataset.source` text for the bundled copy, e.g. "bundled subset: 5000 train / 1000 test of ..."."""
    entry = bundled_manifest().get(name, {})
    counts = entry.get("counts", {})
    title = entry.get("title", fallback_title)
    parts = " / ".join(f"{n} {split}" for split, n in counts.items())
    kind = "bundled copy (complete)" if entry.get("complete") else "bundled subset"
    return f"{kind}: {parts} of {title}" if parts else f"{kind} of {title}"


@dataclass(frozen=True)
class Located:
    """A dataset found on disk: `kind` names the file layout, `path` the file or folder to read."""

    kind: str
    path: Path


def locate(name: str, data_dir: Path, subdirs: Iterable[str], probe: Callable[[Path], Located | None],
           expected: str = "") -> Located:
    """Find dataset `name` in `data_dir`: try `probe` on each `data_dir/<subdir>`, then on `data_dir`.

    `probe(folder)` returns a `Located` or None. When nothing matches, raise `DataError`
    listing every folder tried, the files `expected`, and how to provide the data.
    """
    tried: list[Path] = []
    for folder in [*(data_dir / s for s in subdirs), data_dir]:
        if folder in tried:
            continue
        tried.append(folder)
        if folder.is_dir() and (found := probe(folder)) is not None:
            return found
    raise missing_dataset_error(name, tried, expected)


def find_dataset(name: str, data_dir: str | os.PathLike[str] | None, bundled: Located, title: str,
                 subdirs: Iterable[str], probe: Callable[[Path], Located | None],
                 expected: str = "") -> tuple[Located, str]:
    """Where to read dataset `name` from, and the `source` text saying so: the data dir (argument,
    else `$DEVICEFIT_DATA_DIR`) searched with `locate`, or, without one, the `bundled` copy."""
    root = resolve_data_dir(data_dir)
    if root is None:
        return bundled, bundled_source(name, title)
    found = locate(name, root, subdirs, probe, expected)
    return found, str(found.path)


def missing_dataset_error(name: str, tried: list[Path], expected: str = "") -> DataError:
    looked = "\n".join(f"  - {p}" for p in tried)
    what = f" (expected {expected})" if expected else ""
    return DataError(
        f"dataset {name!r} was not found in the data dir{what}; looked in:\n{looked}\n"
        f"Provide it by copying the files into one of those folders and passing --data-dir DIR "
        f"(or setting ${DATA_DIR_ENV}=DIR), or fetch it with `devicefit data prepare {name} --download "
        f"--data-dir DIR`; without a data dir the bundled subset is used."
    )


def first_existing(folder: Path, names: Iterable[str]) -> Path | None:
    """The first `folder/<name>` that exists, or None."""
    for n in names:
        if (folder / n).exists():
            return folder / n
    return None
