"""Each on-disk format is read from small files generated here: CIFAR pickle batches and tarball, JPEG zips,
MNIST IDX and npz, FSDD WAV folders/zips, image folders; bad inputs raise errors naming the file,
and the decode cache survives corruption without half-written entries."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
import wave
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from devicefit.core import ConfigError, DataError
from devicefit.data import load_dataset, resolve_data_dir
from devicefit.data._cifar10 import CIFAR10_CLASSES

RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv("DEVICEFIT_DATA_DIR", raising=False)
    monkeypatch.setenv("DEVICEFIT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _cache_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache").rglob("*")) if (tmp_path / "cache").exists() else []


# ---------------------------------------------------------------- CIFAR-10 pickle batches and tarball

def _cifar_batch(n: int, seed: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    y = rng.integers(0, 10, size=n)
    data = pickle.dumps({b"batch_label": b"x", b"labels": [int(v) for v in y], b"data": x}, protocol=2)
    return data, x.reshape(n, 3, 32, 32), y


def _write_batches(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder.mkdir(parents=True)
    parts = {}
    for i, name in enumerate([*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]):
        data, x, y = _cifar_batch(4, seed=i)
        (folder / name).write_bytes(data)
        parts[name] = (x, y)
    return parts


def test_cifar10_pickle_batches_folder(tmp_path: Path) -> None:
    parts = _write_batches(tmp_path / "data" / "cifar-10-batches-py")
    train = load_dataset("cifar10", "train", data_dir=tmp_path / "data")
    test = load_dataset("cifar10", "test", data_dir=tmp_path / "data")
    assert train.x.shape == (20, 3, 32, 32) and test.x.shape == (4, 3, 32, 32)
    assert np.array_equal(train.x[:4], parts["data_batch_1"][0])
    assert np.array_equal(train.y[16:], parts["data_batch_5"][1])
    assert np.array_equal(test.x, parts["test_batch"][0]) and train.meta["format"] == "batches"
    assert train.source.endswith("cifar-10-batches-py")


def _tarball(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    parts = _write_batches(src / "cifar-10-batches-py")
    del parts
    path = tmp_path / "data" / "cifar10" / "cifar-10-python.tar.gz"
    path.parent.mkdir(parents=True)
    with tarfile.open(path, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return path


def test_cifar10_tarball_and_cache(tmp_path: Path) -> None:
    path = _tarball(tmp_path)
    ds = load_dataset("cifar10", "train", data_dir=tmp_path / "data")
    assert len(ds) == 20 and ds.source == str(path) and ds.meta["format"] == "tarball"
    cache = Path(ds.meta["cache_path"])
    assert cache.is_file()
    cache.write_bytes(b"PK\x03\x04 corrupt")  # a corrupt entry is rebuilt, not trusted
    again = load_dataset("cifar10", "train", data_dir=tmp_path / "data")
    assert np.array_equal(again.x, ds.x) and np.load(cache)["x"].shape == (20, 3, 32, 32)


def test_truncated_tarball_names_file_and_caches_nothing(tmp_path: Path) -> None:
    path = _tarball(tmp_path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match=r"cifar-10-python\.tar\.gz.*(truncated|corrupt)"):
        load_dataset("cifar10", "train", data_dir=tmp_path / "data")
    assert not [p for p in _cache_files(tmp_path) if p.is_file()]


def test_pickle_with_foreign_globals_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "cifar-10-batches-py"
    _write_batches(folder)
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": Path("x"), b"labels": []}))
    with pytest.raises(DataError, match=r"data_batch_3.*not a CIFAR-10 python batch"):
        load_dataset("cifar10", "train", data_dir=tmp_path / "data")


# ---------------------------------------------------------------- JPEG zips and image folders

def _png_bytes(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def _cifar_jpeg_zip(path: Path, split: str, per_class: int = 2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for c in CIFAR10_CLASSES:
            for i in range(per_class):
                img = RNG.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
                zf.writestr(f"{split}/{c}/{i:04d}.jpg", _png_bytes(img, "JPEG"))


def test_cifar10_jpeg_zip_layout(tmp_path: Path) -> None:
    _cifar_jpeg_zip(tmp_path / "data" / "cifar10-jpg" / "test.zip", "test")
    ds = load_dataset("cifar10", "test", data_dir=tmp_path / "data")
    assert ds.x.shape == (20, 3, 32, 32) and ds.x.dtype == np.uint8
    assert np.array_equal(np.bincount(ds.y), [2] * 10) and ds.meta["format"] == "jpeg"


def test_cifar10_unzipped_class_folders(tmp_path: Path) -> None:
    zip_path = tmp_path / "zips" / "train.zip"
    _cifar_jpeg_zip(zip_path, "train", per_class=1)
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(tmp_path / "data" / "cifar10")
    ds = load_dataset("cifar10", "train", data_dir=tmp_path / "data")
    assert ds.x.shape == (10, 3, 32, 32) and ds.y.tolist() == list(range(10))
    assert ds.source == str(tmp_path / "data" / "cifar10" / "train")
    assert not [p for p in _cache_files(tmp_path) if p.name.endswith(".tmp")]


def test_truncated_zip_names_file(tmp_path: Path) -> None:
    path = tmp_path / "data" / "cifar10-jpg" / "test.zip"
    _cifar_jpeg_zip(path, "test")
    path.write_bytes(path.read_bytes()[:-200])  # the central directory is gone
    with pytest.raises(DataError, match=r"test\.zip.*not a readable zip"):
        load_dataset("cifar10", "test", data_dir=tmp_path / "data")
    assert not [p for p in _cache_files(tmp_path) if p.is_file()]


def _image_tree(root: Path, shapes: dict[str, list[tuple[int, ...]]], split: str = "train") -> None:
    for cls, cls_shapes in shapes.items():
        (root / split / cls).mkdir(parents=True, exist_ok=True)
        for i, shape in enumerate(cls_shapes):
            (root / split / cls / f"{i}.png").write_bytes(_png_bytes(RNG.integers(0, 256, shape, dtype=np.uint8)))


def test_imagefolder_reads_sorted_classes_and_resizes(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    _image_tree(root, {"zebra": [(8, 6, 3)] * 2, "ant": [(8, 6, 3)] * 3})
    _image_tree(root, {"zebra": [(8, 6, 3)], "ant": [(8, 6, 3)]}, split="test")
    train = load_dataset("imagefolder", "train", path=root)
    assert train.classes == ("ant", "zebra") and train.x.shape == (5, 3, 8, 6)
    assert train.y.tolist() == [0, 0, 0, 1, 1] and len(train.mean) == 3
    test = load_dataset("imagefolder", "test", path=root, image_size=(4, 5))
    assert test.x.shape == (2, 3, 4, 5) and test.classes == train.classes


def test_imagefolder_grey_images_have_one_channel(tmp_path: Path) -> None:
    _image_tree(tmp_path / "g", {"a": [(5, 5)] * 2, "b": [(5, 5)]})
    ds = load_dataset("imagefolder", "train", path=tmp_path / "g")
    assert ds.x.shape == (3, 1, 5, 5) and len(ds.std) == 1


def test_imagefolder_wrong_shape_names_file_and_both_shapes(tmp_path: Path) -> None:
    _image_tree(tmp_path / "imgs", {"a": [(8, 8, 3), (8, 8, 3)], "b": [(8, 8, 3), (9, 8, 3)]})
    with pytest.raises(DataError, match=r"b/1\.png.*\(3, 9, 8\).*\(3, 8, 8\)") as err:
        load_dataset("imagefolder", "train", path=tmp_path / "imgs")
    assert "a/0.png" in str(err.value)
    assert not [p for p in _cache_files(tmp_path) if p.is_file()]
    ok = load_dataset("imagefolder", "train", path=tmp_path / "imgs", image_size=8)
    assert ok.x.shape == (4, 3, 8, 8)


def test_imagefolder_undecodable_image_and_missing_path(tmp_path: Path) -> None:
    _image_tree(tmp_path / "imgs", {"a": [(4, 4, 3)]})
    (tmp_path / "imgs" / "train" / "a" / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"bad\.jpg: cannot decode"):
        load_dataset("imagefolder", "train", path=tmp_path / "imgs")
    with pytest.raises(DataError, match=r"neither"):
        load_dataset("imagefolder", "test", path=tmp_path / "imgs")
    with pytest.raises(ConfigError, match=r"path="):
        load_dataset("imagefolder", "train")


# ---------------------------------------------------------------- MNIST IDX and npz

def _idx(arr: np.ndarray, magic: int) -> bytes:
    return struct.pack(f">I{arr.ndim}I", magic, *arr.shape) + arr.astype(np.uint8).tobytes()


def _write_idx(folder: Path, n_train: int = 6, n_test: int = 4, gz: bool = True) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"x_train": RNG.integers(0, 256, (n_train, 28, 28), dtype=np.uint8), "y_train": np.arange(n_train) % 10,
              "x_test": RNG.integers(0, 256, (n_test, 28, 28), dtype=np.uint8), "y_test": np.arange(n_test) % 10}
    files = {"train-images-idx3-ubyte": _idx(arrays["x_train"], 2051),
             "train-labels-idx1-ubyte": _idx(arrays["y_train"], 2049),
             "t10k-images-idx3-ubyte": _idx(arrays["x_test"], 2051),
             "t10k-labels-idx1-ubyte": _idx(arrays["y_test"], 2049)}
    for name, data in files.items():
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_files(tmp_path: Path, gz: bool) -> None:
    arrays = _write_idx(tmp_path / "data" / "mnist", gz=gz)
    train = load_dataset("mnist", "train", data_dir=tmp_path / "data")
    test = load_dataset("mnist", "test", data_dir=tmp_path / "data")
    assert train.x.shape == (6, 1, 28, 28) and np.array_equal(train.x[:, 0], arrays["x_train"])
    assert np.array_equal(test.y, arrays["y_test"]) and train.meta["format"] == "idx"


def test_mnist_idx_bad_magic_and_truncation(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "mnist"
    arrays = _write_idx(folder, gz=False)
    (folder / "train-labels-idx1-ubyte").write_bytes(_idx(arrays["y_train"], 0x0802))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: IDX magic number must be 0x00000801"):
        load_dataset("mnist", "train", data_dir=tmp_path / "data")
    data = _idx(arrays["x_test"], 2051)
    (folder / "t10k-images-idx3-ubyte").write_bytes(data[:-10])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: header says.*truncated"):
        load_dataset("mnist", "test", data_dir=tmp_path / "data")


def test_mnist_npz_and_bad_npz(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    arrays = _write_idx(tmp_path / "unused")
    np.savez(folder / "mnist.npz", **{k: v.astype(np.uint8) for k, v in arrays.items()})
    ds = load_dataset("mnist", "test", data_dir=tmp_path / "data")
    assert ds.x.shape == (4, 1, 28, 28) and ds.meta["format"] == "npz"
    np.savez(folder / "mnist.npz", x_train=arrays["x_train"])
    with pytest.raises(DataError, match=r"mnist\.npz: missing array"):
        load_dataset("mnist", "test", data_dir=tmp_path / "data")


# ---------------------------------------------------------------- FSDD WAVs

def _wav(samples: np.ndarray, rate_hz: int = 8000, channels: int = 1, width: int = 2) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate_hz)
        w.writeframes(np.repeat(samples, channels).astype("<i2" if width == 2 else np.uint8).tobytes())
    return buf.getvalue()


def _tone(freq_hz: float, n: int = 4000) -> np.ndarray:
    return (8000 * np.sin(2 * np.pi * freq_hz * np.arange(n) / 8000)).astype(np.int16)


def _fsdd_files() -> dict[str, bytes]:
    return {f"{d}_{spk}_{take}.wav": _wav(_tone(300 + 100 * d, n=3000 + 4000 * (take % 2)))
            for d in range(10) for spk in ("ann", "bob") for take in (0, 7)}


def test_fsdd_wav_folder_split_and_groups(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "fsdd" / "recordings"
    folder.mkdir(parents=True)
    for name, data in _fsdd_files().items():
        (folder / name).write_bytes(data)
    train = load_dataset("fsdd", "train", data_dir=tmp_path / "data")
    test = load_dataset("fsdd", "test", data_dir=tmp_path / "data", features="logmel")
    assert train.x.shape == (20, 1, 49, 10) and test.x.shape == (20, 1, 49, 40)
    assert set(train.meta["take_index"].tolist()) == {7} and set(test.meta["take_index"].tolist()) == {0}
    assert sorted(set(train.groups.tolist())) == ["ann", "bob"] and train.groups.dtype.kind == "U"
    held = load_dataset("fsdd", "test", data_dir=tmp_path / "data", split_by="speaker", test_speakers=("bob",))
    assert set(held.groups.tolist()) == {"bob"} and len(held) == 20
    with pytest.raises(ConfigError, match=r"test_speakers"):
        load_dataset("fsdd", "test", data_dir=tmp_path / "data", split_by="speaker", test_speakers=("zed",))


def test_fsdd_zip_like_recordings_zip(tmp_path: Path) -> None:
    path = tmp_path / "data" / "recordings.zip"
    path.parent.mkdir(parents=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("recordings/", b"")
        for name, data in _fsdd_files().items():
            zf.writestr(f"recordings/{name}", data)
    ds = load_dataset("fsdd", "train", data_dir=tmp_path / "data", n_mfcc=13)
    assert ds.x.shape == (20, 1, 49, 13) and ds.source == str(path)


@pytest.mark.parametrize(("name", "data", "message"), [
    ("notes.txt", b"hello", "notes.txt: not an FSDD recording"),
    ("3_ann_1.wav", b"RIFF....garbage", "3_ann_1.wav: not a readable WAV"),
    ("3_ann_2.wav", _wav(_tone(440), rate_hz=16000),
     r"3_ann_2.wav: expected mono 16-bit PCM at 8000 Hz, got 1 channel\(s\), 16-bit, 16000 Hz"),
    ("3_ann_3.wav", _wav(_tone(440), channels=2), r"3_ann_3.wav: expected mono.*got 2 channel"),
])
def test_fsdd_bad_file_named(tmp_path: Path, name: str, data: bytes, message: str) -> None:
    folder = tmp_path / "data" / "fsdd"
    folder.mkdir(parents=True)
    for good, wav in list(_fsdd_files().items())[:4]:
        (folder / good).write_bytes(wav)
    (folder / name).write_bytes(data)
    with pytest.raises(DataError, match=message):
        load_dataset("fsdd", "train", data_dir=tmp_path / "data")
    assert not [p for p in _cache_files(tmp_path) if p.is_file()]


# ---------------------------------------------------------------- data dir resolution

def test_missing_dataset_in_data_dir_lists_places(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_dataset("mnist", "train", data_dir=tmp_path)
    text = str(err.value)
    for place in (tmp_path / "mnist", tmp_path / "MNIST" / "raw", tmp_path):
        assert f"- {place}\n" in text or text.endswith(f"- {place}")
    assert "--data-dir" in text and "DEVICEFIT_DATA_DIR" in text and "--download" in text


def test_data_dir_from_env_and_nonexistent_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_data_dir(None) is None
    monkeypatch.setenv("DEVICEFIT_DATA_DIR", str(tmp_path))
    assert resolve_data_dir(None) == tmp_path.resolve()
    _write_idx(tmp_path / "mnist")
    assert load_dataset("mnist", "test").source.startswith(str(tmp_path.resolve()))
    with pytest.raises(DataError, match=r"data_dir .*nowhere.* is not a directory"):
        resolve_data_dir(tmp_path / "nowhere")
