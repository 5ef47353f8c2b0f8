"""Zip archives as data sources: open with a clear error, read members lazily, name the member
that is corrupt."""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

from devicefit.core import DataError

__all__ = ["member_reader", "open_zip"]


def open_zip(path: Path) -> tuple[zipfile.ZipFile, list[zipfile.ZipInfo]]:
    """Open `path` and list its members; DataError naming the file when it is not a readable zip."""
    try:
        zf = zipfile.ZipFile(path)
        return zf, zf.infolist()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable zip archive ({e}); re-copy or re-download it") from None


def member_reader(zf: zipfile.ZipFile, path: Path, member: str) -> Callable[[], bytes]:
    """A zero-argument reader of one member; a corrupt member raises DataError naming it."""

    def read() -> bytes:
        try:
            return zf.read(member)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
            raise DataError(f"{path}: member {member} is corrupt ({e}); re-copy or re-download the archive") from None

    return read
