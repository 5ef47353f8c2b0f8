"""Fetching the official dataset files into a data dir: streamed to a temp file beside the target,
verified (sha256, or content for archives that are not byte-stable), then renamed into place.

URLs live in the module-level `DOWNLOADS` table so a mirror (or a test server) can replace them.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from devicefit.core import ConfigError, DataError, DownloadError, atomic_open, sha256_file

from ._fsdd import WAV_NAME

__all__ = ["DOWNLOADS", "FsddRepack", "RemoteDataset", "RemoteFile", "download", "fetch"]

TIMEOUT_S = 10.0
_CHUNK_BYTES = 1 << 16
FSDD_COMMIT = "26eb9aaf76e81b692f806f9140c2d2777410d7a1"
# sha256 over the sorted lines "<file name> <sha256 of its bytes>\n" of the 3,000 WAVs at FSDD_COMMIT,
# computed from recordings.zip made with `git archive` of that commit (see bundled/README.md).
FSDD_CONTENT_SHA256 = "dbd573d7cafe79c4b49f65718115e1304e24e067fa39eff18a660dc6cb9c360f"


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch: `filename` inside the dataset folder; `sha256` None = verified by content."""

    url: str
    filename: str
    sha256: str | None
    size_bytes: int | None = None


@dataclass(frozen=True)
class RemoteDataset:
    """Files of one dataset, fetched into `<data_dir>/<folder>/`; `finish(path, folder)` post-processes each."""

    folder: str
    files: tuple[RemoteFile, ...]
    finish: Callable[[Path, Path], None] | None = None
    done_marker: str | None = None  # a file whose presence means the dataset is already in place


@dataclass(frozen=True)
class FsddRepack:
    """Check the GitHub archive holds `expected_wavs` recordings (and their content digest, when pinned),
    then write them as `recordings/*.wav` in `recordings.zip` and delete the archive.
    """

    expected_wavs: int = 3000
    content_sha256: str | None = FSDD_CONTENT_SHA256

    def __call__(self, archive: Path, folder: Path) -> None:
        try:
            with zipfile.ZipFile(archive) as zf:
                wavs = {PurePosixPath(n).name: zf.read(n) for n in zf.namelist()
                        if PurePosixPath(n).parent.name == "recordings" and WAV_NAME.match(PurePosixPath(n).name)}
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            archive.unlink(missing_ok=True)
            raise DownloadError(f"{archive}: downloaded FSDD archive is not a readable zip ({e})") from None
        self._verify(archive, wavs)
        with atomic_open(folder / "recordings.zip", "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as out:
            for name in sorted(wavs):
                out.writestr(zipfile.ZipInfo(f"recordings/{name}", (1980, 1, 1, 0, 0, 0)), wavs[name])
        archive.unlink()

    def _verify(self, archive: Path, wavs: dict[str, bytes]) -> None:
        digest = content_digest(wavs)
        if len(wavs) != self.expected_wavs or (self.content_sha256 and digest != self.content_sha256):
            archive.unlink(missing_ok=True)
            raise DownloadError(f"{archive}: expected {self.expected_wavs} FSDD recordings with content sha256 "
                                f"{self.content_sha256}, got {len(wavs)} with {digest}; the archive was deleted")


def content_digest(files: dict[str, bytes]) -> str:
    """sha256 over sorted "<name> <sha256(bytes)>\\n" lines: stable across zip re-packing."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(f"{name} {hashlib.sha256(files[name]).hexdigest()}\n".encode())
    return h.hexdigest()


_MNIST_BASE = "https://ossci-datasets.s3.amazonaws.com/mnist/"
DOWNLOADS: dict[str, RemoteDataset] = {
    "cifar10": RemoteDataset("cifar10", (RemoteFile(
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "cifar-10-python.tar.gz",
        "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce", 170_498_071),)),
    "mnist": RemoteDataset("mnist", (
        RemoteFile(_MNIST_BASE + "train-images-idx3-ubyte.gz", "train-images-idx3-ubyte.gz",
                   "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9_912_422),
        RemoteFile(_MNIST_BASE + "train-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte.gz",
                   "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28_881),
        RemoteFile(_MNIST_BASE + "t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                   "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1_648_877),
        RemoteFile(_MNIST_BASE + "t10k-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
                   "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4_542),
    )),
    "fsdd": RemoteDataset("fsdd", (RemoteFile(
        f"https://github.com/Jakobovski/free-spoken-digit-dataset/archive/{FSDD_COMMIT}.zip",
        f"free-spoken-digit-dataset-{FSDD_COMMIT[:8]}.zip", None),), finish=FsddRepack(),
        done_marker="recordings.zip"),
}


def _offline_error(url: str, reason: object, target: Path) -> DownloadError:
    return DownloadError(
        f"cannot download {url}: {reason}. This machine looks offline (or the host is unreachable). "
        f"Offline options: copy the dataset files into a data dir (e.g. as {target}) and pass --data-dir DIR "
        f"or set DEVICEFIT_DATA_DIR=DIR; or use no data dir at all to train on the bundled subset."
    )


def _stream(response: http.client.HTTPResponse, out: object, progress: Callable[[int, int | None], None] | None,
            ) -> tuple[str, int]:
    """Copy the response body into `out`, returning (sha256 hex, byte count)."""
    h, done = hashlib.sha256(), 0
    total = int(response.headers.get("Content-Length") or 0) or None
    while block := response.read(_CHUNK_BYTES):
        out.write(block)  # type: ignore[attr-defined]
        h.update(block)
        done += len(block)
        if progress is not None:
            progress(done, total)
    return h.hexdigest(), done


def fetch(url: str, target: Path, sha256: str | None = None, *, timeout_s: float = TIMEOUT_S,
          progress: Callable[[int, int | None], None] | None = None) -> Path:
    """Download `url` to `target` through a temp file in the same folder; verify `sha256` before the rename.

    A checksum mismatch, HTTP error or network failure raises `DownloadError` and leaves no partial
    file behind. A failed connection (refused, DNS, timeout after `timeout_s`) names the offline options.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout_s) as response:
            actual, size = _stream(response, out, progress)
        if sha256 is not None and actual != sha256:
            raise DownloadError(f"{url}: sha256 mismatch for {target.name}: expected {sha256}, got {actual} "
                                f"({size} bytes); the download was deleted")
        os.replace(tmp, target)
        return target
    except urllib.error.HTTPError as e:
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise _offline_error(url, e.reason, target) from None
    except (TimeoutError, ConnectionError, http.client.HTTPException) as e:
        raise _offline_error(url, f"{type(e).__name__}: {e}", target) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _already_there(file: RemoteFile, target: Path) -> bool:
    if not target.is_file():
        return False
    return file.sha256 is None or sha256_file(target) == file.sha256


def download(name: str, data_dir: str | os.PathLike[str], *, timeout_s: float = TIMEOUT_S,
             progress: Callable[[int, int | None], None] | None = None) -> Path:
    """Fetch dataset `name`'s official files into `<data_dir>/<folder>/` and return that folder.

    Files already present with the right sha256 are kept. Raises `ConfigError` for a dataset
    without downloads, `DownloadError` when offline or on a checksum/content mismatch.
    """
    if name not in DOWNLOADS:
        raise ConfigError(f"no download is known for dataset {name!r}; downloadable: {', '.join(sorted(DOWNLOADS))}")
    if data_dir is None:
        raise DataError("download needs a data dir: pass --data-dir DIR or set DEVICEFIT_DATA_DIR")
    remote = DOWNLOADS[name]
    folder = Path(data_dir).expanduser() / remote.folder
    if remote.done_marker and (folder / remote.done_marker).is_file():
        return folder
    for file in remote.files:
        target = folder / file.filename
        if not _already_there(file, target):
            fetch(file.url, target, file.sha256, timeout_s=timeout_s, progress=progress)
        if remote.finish is not None:
            remote.finish(target, folder)
    return folder
