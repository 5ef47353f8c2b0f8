"""Train the model zoo on CIFAR-10 and on the spoken digits on this machine (2 cores) and
write accuracy, parameters, MACs, peak activation memory and train time as JSON + Markdown.

Every entry runs as a devicefit train job in `benchmarks/runs/<entry>` (not committed), so a
killed benchmark resumes where it stopped and a finished entry is read back, not retrained.

    python benchmarks/train_baselines.py --data-dir ../shared/data            # everything
    python benchmarks/train_baselines.py --data-dir ../shared/data --only resnet8-cifar10-full
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devicefit.core import atomic_write_json, atomic_write_text, from_dict, machine_info, read_json
from devicefit.pipelines import TrainJobConfig, run_train_job
from devicefit.reports import Column, format_bytes, format_count, markdown_table

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Entry:
    """One benchmark row: a train job on the bundled subset (`full=False`) or the full copy."""

    name: str
    data: str
    model: str
    full: bool
    epochs: int
    params: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    data_options: dict[str, Any] = field(default_factory=dict)


_CIFAR_ZOO = [("mobilenet_v1", {"width_mult": 0.25}), ("mobilenet_v2", {"width_mult": 0.35}),
              ("mcunet", {}), ("shufflenet_v2", {}), ("resnet8", {}), ("resnet20", {}), ("dscnn", {})]
_AUDIO = {"features": "mfcc"}
_AUDIO_TRAIN = {"batch_size": 64, "optimizer": "adamw", "lr": 0.003, "weight_decay": 0.01}

ENTRIES = [
    *(Entry(f"{m}-cifar10-subset", "cifar10", m, False, 10, p) for m, p in _CIFAR_ZOO),
    Entry("dscnn-fsdd", "fsdd", "dscnn", True, 30, {}, _AUDIO_TRAIN, _AUDIO),
    Entry("resnet8-fsdd", "fsdd", "resnet8", True, 30, {}, _AUDIO_TRAIN, _AUDIO),
    Entry("mobilenet_v2-fsdd", "fsdd", "mobilenet_v2", True, 30, {"width_mult": 0.35}, _AUDIO_TRAIN, _AUDIO),
    Entry("resnet8-cifar10-full", "cifar10", "resnet8", True, 30, {}, {"batch_size": 128}),
    # the pruning benchmark's redundant network: ~2.4 min per epoch on 2 threads here
    Entry("resnet20-cifar10-full", "cifar10", "resnet20", True, 15, {}, {"batch_size": 128, "lr": 0.1}),
]


def job_config(entry: Entry, data_dir: str | None) -> TrainJobConfig:
    return from_dict(TrainJobConfig, {
        "run_dir": str(HERE / "runs" / entry.name),
        "data": {"name": entry.data, "data_dir": data_dir if entry.full else None, "options": entry.data_options},
        "model": {"name": entry.model, "params": entry.params},
        "train": {"epochs": entry.epochs, "seed": 0, "threads": 2, **entry.train},
    })


def run_entry(entry: Entry, data_dir: str | None) -> dict[str, Any]:
    if entry.full and entry.data == "cifar10" and not data_dir:
        raise SystemExit(f"{entry.name} needs the full CIFAR-10 copy: pass --data-dir")
    m = run_train_job(job_config(entry, data_dir), progress=sys.stderr.isatty())
    curve = [{"epoch": h["epoch"], "minutes": round(t / 60, 2), "val_acc": h.get("val_acc")}
             for h, t in zip(m["history"], itertools.accumulate(h["seconds"] for h in m["history"]), strict=True)]
    keep = ("data_source", "n_train", "n_val", "n_test", "test_accuracy", "params", "macs", "param_bytes",
            "peak_activation_bytes", "train_seconds")
    row = {"entry": entry.name, "model": m["model"], "dataset": entry.data, "epochs": entry.epochs,
           **{k: m[k] for k in keep}, "curve": curve}
    if data_dir:  # say "<data-dir>/..." rather than this machine's path
        row["data_source"] = row["data_source"].replace(str(Path(data_dir).resolve()), "<data-dir>")
    return row


COLUMNS = [
    Column("entry", "run"), Column("dataset", "data"), Column("n_train", "train images", str, "right"),
    Column("epochs", "epochs", str, "right"),
    Column("test_accuracy", "test acc.", lambda v: f"{100 * v:.2f}%", "right"),
    Column("params", "params", lambda v: f"{v:,}", "right"), Column("macs", "MACs", format_count, "right"),
    Column("param_bytes", "int8 weights", format_bytes, "right"),
    Column("peak_activation_bytes", "peak act. (int8)", format_bytes, "right"),
    Column("train_seconds", "train time", lambda v: f"{v / 60:.1f} min", "right"),
]


def write_outputs(rows: list[dict[str, Any]], out_dir: Path) -> None:
    info = machine_info()
    atomic_write_json(out_dir / "train_baselines.json", {"machine": info, "rows": rows})
    lines = [f"Measured on {info['cpu_model']} ({info['usable_cpus']} usable cores), torch threads = 2.\n",
             markdown_table(rows, COLUMNS)]
    for row in rows:
        if row["entry"].endswith("-full"):
            lines.append(f"\nValidation accuracy vs training time, {row['entry']}:\n")
            lines.append(markdown_table(row["curve"], [
                Column("epoch", "epoch", str, "right"), Column("minutes", "minutes", str, "right"),
                Column("val_acc", "val acc.", lambda v: f"{100 * v:.2f}%", "right")]))
    atomic_write_text(out_dir / "train_baselines.md", "".join(lines))


def _previous_rows(out_dir: Path) -> dict[str, dict[str, Any]]:
    """Rows of an earlier run, so running a few entries updates the table instead of replacing it."""
    path = out_dir / "train_baselines.json"
    return {r["entry"]: r for r in read_json(path)["rows"]} if path.exists() else {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("DEVICEFIT_DATA_DIR"),
                        help="folder with full dataset copies (for the *-full entries)")
    parser.add_argument("--only", nargs="*", help="entry names to run (default: all)")
    parser.add_argument("--out", default=str(HERE / "results"), help="folder for the JSON and Markdown")
    args = parser.parse_args()
    os.environ.pop("DEVICEFIT_DATA_DIR", None)  # subset entries must use the bundled subsets
    chosen = [e for e in ENTRIES if not args.only or e.name in args.only]
    unknown = set(args.only or ()) - {e.name for e in ENTRIES}
    if unknown:
        parser.error(f"unknown entries {sorted(unknown)}; known: {[e.name for e in ENTRIES]}")
    rows = _previous_rows(Path(args.out))
    for entry in chosen:
        print(f"== {entry.name}", file=sys.stderr, flush=True)
        rows[entry.name] = run_entry(entry, args.data_dir)
        write_outputs([rows[e.name] for e in ENTRIES if e.name in rows], Path(args.out))
    print((Path(args.out) / "train_baselines.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
