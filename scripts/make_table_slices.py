"""Build the bundled NAS table slices in src/devicefit/hardware/tables/ from the full copies (deterministic).

    python scripts/make_table_slices.py --data-dir ../shared/data

NB201: 600 of the 15,625 cells, stratified over latency (rows sorted by their mean log-latency over the
measured columns, cut into 600 equal strata, one row drawn per stratum), with every latency column and the
matching rows of the accuracy table. FBNet: 400 of the 5,000 rows, stratified the same way. Rows are copied
as text, unchanged; gzip members carry no name or time, so a rerun reproduces the bytes.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "src" / "devicefit" / "hardware" / "tables"
SLICES = {  # family: (latency file, index column, rows, slice file)
    "nb201": ("nb201_latency_help.csv", "nb201_index", 600, "nb201_latency_slice.csv.gz"),
    "fbnet": ("fbnet_latency_help.csv", "arch_id", 400, "fbnet_latency_slice.csv.gz"),
}
ACCURACY = ("nb201_accuracy_natsbench.csv", "nb201_accuracy_slice.csv.gz")
META_COLS = {"nb201_index", "arch_str", "op_codes", "arch_id", "blocks", "op_idx"}
ESTIMATED = {"eyeriss", "fpga"}


def _lines(path: Path) -> tuple[str, list[str]]:
    text = path.read_text(encoding="utf-8").splitlines(keepends=True)
    return text[0], [t for t in text[1:] if t.strip()]


def _stratified_rows(header: str, lines: list[str], k: int, seed: int) -> np.ndarray:
    """Sorted row numbers: one random row from each of `k` equal strata of mean log-latency."""
    cols = next(csv.reader([header]))
    keep = [j for j, c in enumerate(cols) if c not in META_COLS and c not in ESTIMATED]
    values = np.array([[float(r[j]) for j in keep] for r in csv.reader(lines)])
    order = np.argsort(np.log(values).mean(axis=1), kind="stable")
    rng = np.random.default_rng(seed)
    return np.sort(np.array([rng.choice(s) for s in np.array_split(order, k)]))


def _write_gz(path: Path, header: str, lines: list[str]) -> str:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as f:
        f.write((header + "".join(lines)).encode("utf-8"))
    path.write_bytes(buf.getvalue())
    return hashlib.sha256(buf.getvalue()).hexdigest()


def _index_of(header: str, line: str, column: str) -> str:
    return next(csv.reader([line]))[next(csv.reader([header])).index(column)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, required=True, help="folder holding nas-hw-benchmarks/")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    src = args.data_dir / "nas-hw-benchmarks"
    if not src.is_dir():
        src = args.data_dir
    args.out.mkdir(parents=True, exist_ok=True)
    hashes: dict[str, str] = {}
    picked: dict[str, set[str]] = {}
    for family, (file, index_col, k, out_name) in SLICES.items():
        header, lines = _lines(src / file)
        rows = _stratified_rows(header, lines, k, args.seed)
        chosen = [lines[i] for i in rows]
        picked[family] = {_index_of(header, line, index_col) for line in chosen}
        hashes[out_name] = _write_gz(args.out / out_name, header, chosen)
        print(f"{out_name}: {len(chosen)} of {len(lines)} rows")
    header, lines = _lines(src / ACCURACY[0])
    chosen = [line for line in lines if _index_of(header, line, "nb201_index") in picked["nb201"]]
    hashes[ACCURACY[1]] = _write_gz(args.out / ACCURACY[1], header, chosen)
    print(f"{ACCURACY[1]}: {len(chosen)} rows")
    header, lines = _lines(src / "columns.csv")
    keep = {SLICES["nb201"][0], SLICES["fbnet"][0]}
    cols = [line for line in lines if next(csv.reader([line]))[0] in keep]
    (args.out / "columns.csv").write_text(header + "".join(cols), encoding="utf-8")
    for name, digest in sorted(hashes.items()):
        print(f"  {name} sha256 {digest}")


if __name__ == "__main__":
    main()
