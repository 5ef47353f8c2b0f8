"""Free Spoken Digit Dataset: `{digit}_{speaker}_{index}.wav` clips (8 kHz mono 16-bit) from `recordings.zip`
or a folder, padded/cropped to 1 s and turned into MFCC or log-mel features (1, 49, coeffs).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from devicefit.core import ConfigError, DataError, check_choice

from ._archive import member_reader, open_zip
from ._audio import fix_length, log_mel, mfcc, read_wav
from ._cache import cached_arrays
from ._dataset import ArrayDataset, DatasetInfo, register_dataset
from ._paths import Located, bundled_dir, find_dataset

__all__ = ["FSDD_SPEAKERS", "WAV_NAME", "load_fsdd", "read_fsdd_clips"]

SAMPLE_RATE_HZ = 8000
CLIP_SAMPLES = 8000  # 1 s
FSDD_SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
WAV_NAME = re.compile(r"^(\d)_([A-Za-z0-9]+)_(\d+)\.wav$")
FEATURES = ("mfcc", "logmel")
SPLIT_BY = ("take", "speaker")
TEST_TAKES = 5  # official split: takes 0-4 are the test set
_EXPECTED = "recordings.zip or a recordings/ folder of {digit}_{speaker}_{index}.wav"
_SUBDIRS = ("fsdd", "free-spoken-digit-dataset")

# (file name, display name for errors, bytes reader)
_Clip = tuple[str, str, Callable[[], bytes]]


def _skipped(name: str) -> bool:
    """Hidden files and macOS zip debris are not data."""
    return name.startswith(".") or "__MACOSX" in name


def _zip_clips(path: Path) -> list[_Clip]:
    """Files of a zip at its top level or inside a `recordings/` folder."""
    zf, infos = open_zip(path)
    clips = []
    for info in infos:
        p = PurePosixPath(info.filename)
        in_scope = len(p.parts) == 1 or p.parent.name == "recordings"
        if not info.is_dir() and in_scope and not _skipped(p.name):
            clips.append((p.name, f"{path}:{info.filename}", member_reader(zf, path, info.filename)))
    return clips


def _folder_clips(folder: Path) -> list[_Clip]:
    return [(f.name, str(f), f.read_bytes) for f in folder.iterdir() if f.is_file() and not _skipped(f.name)]


def read_fsdd_clips(source: Path) -> dict[str, np.ndarray]:
    """All clips of a zip or folder: waveforms float32 (N, 8000), digit, speaker (str) and take index.

    Every non-hidden file must be a `{digit}_{speaker}_{index}.wav` 8 kHz mono 16-bit WAV, else
    `DataError` names it. Clips are sorted by file name.
    """
    clips = sorted(_folder_clips(source) if source.is_dir() else _zip_clips(source))
    if not clips:
        raise DataError(f"{source}: no FSDD recordings found (expected {{digit}}_{{speaker}}_{{index}}.wav files)")
    waves, digits, speakers, takes = [], [], [], []
    for name, display, read in clips:
        match = WAV_NAME.match(name)
        if match is None:
            raise DataError(f"{display}: not an FSDD recording; the folder must hold only "
                            f"{{digit}}_{{speaker}}_{{index}}.wav files")
        waves.append(fix_length(read_wav(read(), display, sample_rate_hz=SAMPLE_RATE_HZ), CLIP_SAMPLES))
        digits.append(int(match[1]))
        speakers.append(match[2])
        takes.append(int(match[3]))
    return {"waveform": np.stack(waves), "y": np.array(digits, dtype=np.int64),
            "speaker": np.array(speakers, dtype=str), "take": np.array(takes, dtype=np.int64)}


def _features(waveform: np.ndarray, features: str, n_mfcc: int) -> np.ndarray:
    """(N, 8000) → float32 (N, 1, 49, coeffs)."""
    feats = mfcc(waveform, n_mfcc) if features == "mfcc" else log_mel(waveform)
    return feats[:, None].astype(np.float32)


def _probe(folder: Path) -> Located | None:
    if (folder / "recordings.zip").is_file():
        return Located("zip", folder / "recordings.zip")
    if (folder / "recordings").is_dir():
        return Located("folder", folder / "recordings")
    if any(WAV_NAME.match(p.name) for p in folder.glob("*.wav")):
        return Located("folder", folder)
    return None


def _is_test(arrays: dict[str, np.ndarray], split_by: str, test_speakers: tuple[str, ...]) -> np.ndarray:
    if split_by == "take":
        return arrays["take"] < TEST_TAKES
    unknown = sorted(set(test_speakers) - set(arrays["speaker"].tolist()))
    if not test_speakers or unknown:
        raise ConfigError(f"test_speakers must name speakers present in the data "
                          f"({sorted(set(arrays['speaker'].tolist()))}), got {list(test_speakers)}")
    return np.isin(arrays["speaker"], test_speakers)


def _check_options(split: str, features: str, n_mfcc: int, split_by: str) -> None:
    check_choice("split", split, ("train", "test"))
    check_choice("features", features, FEATURES)
    check_choice("split_by", split_by, SPLIT_BY)
    if not isinstance(n_mfcc, int) or not 1 <= n_mfcc <= 40:
        raise ConfigError(f"n_mfcc must be an int in 1..40, got {n_mfcc!r}")


def load_fsdd(split: str = "train", data_dir: str | os.PathLike[str] | None = None, *, features: str = "mfcc",
              n_mfcc: int = 10, split_by: str = "take", test_speakers: tuple[str, ...] = ("theo",)) -> ArrayDataset:
    """FSDD `split` as features x float32 (N, 1, 49, n_mfcc) (or (N, 1, 49, 40) log-mel), y = digit.

    Split: `split_by="take"` is the official one (takes 0-4 test, 5-49 train); `"speaker"` holds out
    `test_speakers`. `groups` = speaker; `meta["take_index"]` = take per example. mean/std are one
    value each, computed from the train split's features.
    """
    _check_options(split, features, n_mfcc, split_by)
    found, source = find_dataset("fsdd", data_dir, Located("zip", bundled_dir("fsdd") / "recordings.zip"),
                                 "FSDD (Free Spoken Digit Dataset)", _SUBDIRS, _probe, _EXPECTED)
    options = {"features": features, "n_mfcc": n_mfcc if features == "mfcc" else None}

    def build() -> dict[str, np.ndarray]:
        clips = read_fsdd_clips(found.path)
        x = _features(clips.pop("waveform"), features, n_mfcc)
        return {"x": x, **clips}

    arrays, cache_path = cached_arrays("fsdd", [found.path], options, ("x", "y", "speaker", "take"), build)
    return _select(arrays, split, split_by, tuple(test_speakers), source, {**options, "cache_path": str(cache_path)})


def _select(arrays: dict[str, np.ndarray], split: str, split_by: str, test_speakers: tuple[str, ...], source: str,
            meta: dict[str, Any]) -> ArrayDataset:
    is_test = _is_test(arrays, split_by, test_speakers)
    train_x = arrays["x"][~is_test]
    mean, std = float(train_x.mean()), max(float(train_x.std()), 1e-6)
    keep = is_test if split == "test" else ~is_test
    meta = {**meta, "take_index": arrays["take"][keep], "split_by": split_by, "sample_rate_hz": SAMPLE_RATE_HZ,
            "clip_samples": CLIP_SAMPLES, **({"test_speakers": list(test_speakers)} if split_by == "speaker" else {})}
    return ArrayDataset(name="fsdd", split=split, x=np.ascontiguousarray(arrays["x"][keep]), y=arrays["y"][keep],
                        classes=tuple(str(d) for d in range(10)), source=source, mean=(mean,), std=(std,),
                        groups=arrays["speaker"][keep], meta=meta)


register_dataset(DatasetInfo(
    name="fsdd", load=load_fsdd, input_shape=(1, 49, 10), num_classes=10,
    description="Free Spoken Digit Dataset: spoken digits, 8 kHz, 6 speakers x 50 takes; MFCC (1, 49, 10) "
                "or log-mel (1, 49, 40); official split takes 0-4 test (2,700 / 300); bundled complete",
    license="CC BY-SA 4.0 - Free Spoken Digit Dataset (FSDD), Zohar Jackson et al., "
            "https://github.com/Jakobovski/free-spoken-digit-dataset",
    augment="time_shift",
))
