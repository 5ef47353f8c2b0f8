"""The download path against a local http.server on 127.0.0.1: success, checksum mismatch, HTTP error,
refused connection and timeout (offline message), FSDD content verification; never a partial file."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import socket
import struct
import threading
import time
import wave
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from devicefit.core import DataError, DownloadError
from devicefit.data import DOWNLOADS, RemoteDataset, RemoteFile, download, load_dataset, prepare
from devicefit.data._download import FsddRepack, content_digest


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DEVICEFIT_DATA_DIR", raising=False)
    monkeypatch.setenv("DEVICEFIT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, folder it serves) of a quiet local HTTP server."""
    root = tmp_path / "served"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", root
    httpd.shutdown()
    httpd.server_close()


def _idx(arr: np.ndarray, magic: int) -> bytes:
    return struct.pack(f">I{arr.ndim}I", magic, *arr.shape) + arr.astype(np.uint8).tobytes()


def _serve_mnist(root: Path, base: str) -> RemoteDataset:
    rng = np.random.default_rng(0)
    files = {"train-images-idx3-ubyte.gz": _idx(rng.integers(0, 256, (10, 28, 28)), 2051),
             "train-labels-idx1-ubyte.gz": _idx(np.arange(10), 2049),
             "t10k-images-idx3-ubyte.gz": _idx(rng.integers(0, 256, (5, 28, 28)), 2051),
             "t10k-labels-idx1-ubyte.gz": _idx(np.arange(5), 2049)}
    remote = []
    for name, raw in files.items():
        data = gzip.compress(raw, mtime=0)
        (root / name).write_bytes(data)
        remote.append(RemoteFile(base + name, name, hashlib.sha256(data).hexdigest(), len(data)))
    return RemoteDataset("mnist", tuple(remote))


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def test_pinned_table_has_checksums() -> None:
    assert DOWNLOADS["cifar10"].files[0].url == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    for name in ("cifar10", "mnist"):
        for f in DOWNLOADS[name].files:
            assert f.url.startswith("https://") and len(f.sha256 or "") == 64
    fsdd = DOWNLOADS["fsdd"]
    assert "26eb9aaf76e81b692f806f9140c2d2777410d7a1" in fsdd.files[0].url and isinstance(fsdd.finish, FsddRepack)


def test_download_success_then_load(server: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base, root = server
    monkeypatch.setitem(DOWNLOADS, "mnist", _serve_mnist(root, base))
    seen: list[int] = []
    folder = download("mnist", tmp_path / "data", progress=lambda done, total: seen.append(done))
    assert folder == tmp_path / "data" / "mnist"
    assert _leftovers(folder) == sorted(f.filename for f in DOWNLOADS["mnist"].files)  # no .part files
    assert seen and seen[-1] > 0
    ds = load_dataset("mnist", "train", data_dir=tmp_path / "data")
    assert ds.x.shape == (10, 1, 28, 28) and ds.meta["format"] == "idx"
    # a second call keeps verified files (the server could be gone)
    monkeypatch.setitem(DOWNLOADS, "mnist", RemoteDataset("mnist", tuple(
        RemoteFile("http://127.0.0.1:9/" + f.filename, f.filename, f.sha256) for f in DOWNLOADS["mnist"].files)))
    assert download("mnist", tmp_path / "data") == folder


def test_checksum_mismatch_deletes_download(server: tuple[str, Path], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    base, root = server
    (root / "blob.bin").write_bytes(b"x" * 100_000)
    actual = hashlib.sha256(b"x" * 100_000).hexdigest()
    remote = RemoteDataset("mnist", (RemoteFile(base + "blob.bin", "blob.bin", "0" * 64),))
    monkeypatch.setitem(DOWNLOADS, "mnist", remote)
    with pytest.raises(DownloadError, match=rf"expected {'0' * 64}, got {actual}"):
        download("mnist", tmp_path / "data")
    assert _leftovers(tmp_path / "data" / "mnist") == []


def test_http_error(server: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base, _ = server
    monkeypatch.setitem(DOWNLOADS, "mnist", RemoteDataset("mnist", (RemoteFile(base + "missing.gz", "m.gz", None),)))
    with pytest.raises(DownloadError, match=r"HTTP 404"):
        download("mnist", tmp_path / "data")
    assert _leftovers(tmp_path / "data" / "mnist") == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_refused_connection_fails_fast_with_offline_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/cifar-10-python.tar.gz"
    remote = RemoteDataset("cifar10", (RemoteFile(url, "cifar-10-python.tar.gz", "0" * 64),))
    monkeypatch.setitem(DOWNLOADS, "cifar10", remote)
    start = time.monotonic()
    with pytest.raises(DownloadError) as err:
        download("cifar10", tmp_path / "data")
    assert time.monotonic() - start < 5
    text = str(err.value)
    assert "offline" in text and "--data-dir" in text and "DEVICEFIT_DATA_DIR" in text and "bundled subset" in text
    assert _leftovers(tmp_path / "data" / "cifar10") == []


def test_silent_server_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/x.gz"
        monkeypatch.setitem(DOWNLOADS, "mnist", RemoteDataset("mnist", (RemoteFile(url, "x.gz", None),)))
        with pytest.raises(DownloadError, match=r"offline"):
            download("mnist", tmp_path / "data", timeout_s=0.3)
    assert _leftovers(tmp_path / "data" / "mnist") == []


def _wav(seed: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.random.default_rng(seed).integers(-3000, 3000, 2000).astype("<i2").tobytes())
    return buf.getvalue()


def _serve_fsdd_archive(root: Path) -> dict[str, bytes]:
    wavs = {f"{d}_ann_{t}.wav": _wav(10 * d + t) for d in range(10) for t in (1, 6)}
    with zipfile.ZipFile(root / "archive.zip", "w") as zf:  # GitHub archive layout: one top folder
        zf.writestr("free-spoken-digit-dataset-26eb/README.md", "# FSDD")
        zf.writestr("free-spoken-digit-dataset-26eb/utils/tool.py", "print()")
        for name, data in wavs.items():
            zf.writestr(f"free-spoken-digit-dataset-26eb/recordings/{name}", data)
    return wavs


def test_fsdd_archive_verified_by_content_and_repacked(server: tuple[str, Path], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    base, root = server
    wavs = _serve_fsdd_archive(root)
    remote = RemoteDataset("fsdd", (RemoteFile(base + "archive.zip", "fsdd-archive.zip", None),),
                           finish=FsddRepack(len(wavs), content_digest(wavs)), done_marker="recordings.zip")
    monkeypatch.setitem(DOWNLOADS, "fsdd", remote)
    folder = download("fsdd", tmp_path / "data")
    assert _leftovers(folder) == ["recordings.zip"]
    with zipfile.ZipFile(folder / "recordings.zip") as zf:
        assert sorted(zf.namelist()) == sorted(f"recordings/{n}" for n in wavs)
    ds = load_dataset("fsdd", "train", data_dir=tmp_path / "data")
    assert len(ds) == 10 and ds.x.shape == (10, 1, 49, 10)


def test_fsdd_archive_with_wrong_content_is_rejected(server: tuple[str, Path], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    base, root = server
    _serve_fsdd_archive(root)
    remote = RemoteDataset("fsdd", (RemoteFile(base + "archive.zip", "fsdd-archive.zip", None),),
                           finish=FsddRepack(3000), done_marker="recordings.zip")
    monkeypatch.setitem(DOWNLOADS, "fsdd", remote)
    with pytest.raises(DownloadError, match=r"expected 3000 FSDD recordings.*got 20"):
        download("fsdd", tmp_path / "data")
    assert _leftovers(tmp_path / "data" / "fsdd") == []


def test_prepare_download_needs_a_data_dir() -> None:
    with pytest.raises(DataError, match=r"needs a data dir"):
        prepare("mnist", download=True)


def test_prepare_downloads_then_summarises(server: tuple[str, Path], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    base, root = server
    monkeypatch.setitem(DOWNLOADS, "mnist", _serve_mnist(root, base))
    (tmp_path / "data").mkdir()
    summary = prepare("mnist", data_dir=tmp_path / "data", download=True)
    assert summary["splits"]["train"]["count"] == 10 and summary["splits"]["test"]["count"] == 5
    assert summary["splits"]["test"]["source"] == str(tmp_path / "data" / "mnist")
