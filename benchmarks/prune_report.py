"""Render a finished `devicefit prune` run as a results record: its `compress.json` copied to
benchmarks/results/<name>.json with machine paths made relative, and a Markdown page with the before/after
table, the depth plans scored by `--drop-blocks auto`, the residual blocks removed (depth pruning) and every
latency-driven round.

    python benchmarks/prune_report.py benchmarks/runs/prune-r20-depth4 --name prune-r20-depth4 \\
        --title "ResNet-20: 4 residual blocks removed, then channels, to 2x (AVX-512 VM)" \\
        --command "devicefit prune benchmarks/runs/resnet20-cifar10-full --run-dir ... --drop-blocks 4 --speedup 2"

Nothing is measured here: every figure comes from the run's own record.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from devicefit.core import atomic_write_json, atomic_write_text, read_json

ROOT = Path(__file__).resolve().parent


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("run", type=Path, help="the prune run directory (holds compress.json)")
    ap.add_argument("--name", required=True, help="results stem under benchmarks/results")
    ap.add_argument("--title", required=True, help="the page's heading")
    ap.add_argument("--command", required=True, help="the command that made the run, shown verbatim")
    ap.add_argument("--note", default="", help="a closing paragraph (the verdict), Markdown")
    ap.add_argument("--out", type=Path, default=ROOT / "results", help="results folder")
    return ap.parse_args()


def write_result(stem: Path, doc: dict[str, Any], text: str) -> None:
    """`stem`.json and `stem`.md, each written atomically, and the Markdown printed."""
    atomic_write_json(stem.with_suffix(".json"), doc)
    atomic_write_text(stem.with_suffix(".md"), text)
    print(text)


def relative(record: dict[str, Any]) -> dict[str, Any]:
    """`record` with absolute paths made relative to the repository root (its parent folder, which holds
    ../shared, as "../")."""
    text = json.dumps(record).replace(str(ROOT.parent) + "/", "").replace(str(ROOT.parent.parent) + "/", "../")
    return dict(json.loads(text))


def markdown(record: dict[str, Any], *, name: str, title: str, command: str) -> str:
    m, cfg = record["metrics"], record["config"]
    d, b, a = m["details"], m["before"], m["after"]
    ft = cfg["finetune"]
    pct = lambda v: f"{100 * v:.2f}%"  # noqa: E731
    restart = "" if not cfg.get("final_lr") else f" restarted at lr {d['final_finetune']['lr']}" + (
        " (the source's)" if cfg["final_lr"] == "source" else "")
    lines = [f"# {title}", "", "Command:", "", f"    {command}", "",
             f"Record: [`{name}.json`]({name}.json) (the job's `compress.json`). Machine: "
             f"{record['machine'].get('cpu_model', '?')}, {record['machine'].get('usable_cpus', '?')} CPUs, flags "
             f"{', '.join(record['machine'].get('cpu_flags', []))}. "
             f"Fine-tuning: SGD lr {ft['lr']}, {ft['schedule']}, batch {ft['batch_size']}, {ft['threads']} "
             f"thread(s), {ft['epochs']} epoch(s) after each pruning step"
             + (f" and {cfg['final_epochs']} final epochs" if cfg.get("final_epochs") else "")
             + restart
             + (", distilled from the source" if cfg.get("distill") else "") + f". Timing: {m['latency_method']}. "
             f"Test: {m['test_source']}. Job wall time {m['job_seconds'] / 60:.1f} min.", "",
             "| | before | after |", "|---|---:|---:|",
             f"| test accuracy ({m['n_test']:,} images) | {pct(b['accuracy'])} | **{pct(a['accuracy'])} "
             f"({100 * (a['accuracy'] - b['accuracy']):+.2f})** |",
             f"| MACs | {b['macs'] / 1e6:.1f} M | {a['macs'] / 1e6:.1f} M ({b['macs'] / a['macs']:.2f}× fewer) |",
             f"| parameters | {b['params']:,} | {a['params']:,} |",
             f"| ONNX bytes | {b['onnx_bytes']:,} | {a['onnx_bytes']:,} |",
             f"| latency, {d.get('target', cfg['target'])}, batch 1 | {m['before_latency_ms']:.3f} ms | "
             f"{m['after_latency_ms']:.3f} ms |",
             f"| paired speed-up | | **{m['speedup']:.2f}×**"
             + (f" (goal {d['goal_speedup']:g}×)" if d.get("goal_speedup") else "") + " |", ""]
    search = d.get("depth_search")
    if search:
        lines += [f"How many blocks to drop was chosen by `--drop-blocks auto`: {search['method']}. Chosen: "
                  f"**{search['chosen']} block(s)**.", "",
                  "| blocks | removed | channel rounds | MACs | paired speed-up | goal | val. accuracy after 1 epoch "
                  "| val. loss | seconds |", "|---:|---|---:|---:|---:|---|---:|---:|---:|"]
        for p in search["plans"]:
            mark = "**" if p["blocks"] == search["chosen"] else ""
            lines.append(f"| {mark}{p['blocks']}{mark} | {', '.join(f'`{r}`' for r in p['removed']) or '–'} | "
                         f"{p['channel_rounds']} | {p['macs'] / 1e6:.1f} M | {p['speedup']:.2f}× | "
                         f"{'reached' if p['reached'] else 'short'} | "
                         + (f"{mark}{pct(p['val_accuracy'])}{mark} | {p['val_loss']:.3f}"
                            if p["val_accuracy"] is not None else "– | –") + f" | {p['seconds']:.0f} |")
        lines.append("")
    blocks = d.get("blocks")
    if blocks:
        lines += [f"Residual blocks removed first (criterion `{blocks['criterion']}`, scored on 512 training "
                  "images, greedily: the lowest score goes, the rest are scored again; then one fine-tune). "
                  f"MACs {blocks['macs_before'] / 1e6:.1f} M → {blocks['macs_after'] / 1e6:.1f} M "
                  f"({blocks['macs_ratio']:.2f}× fewer).", "",
                  "| order | block | its score when removed | other blocks' scores that round |", "|---:|---|---:|---|"]
        for i, (path, scores) in enumerate(zip(blocks["removed"], blocks["scores"], strict=True), 1):
            others = ", ".join(f"{p} {s:.3f}" for p, s in sorted(scores.items()) if p != path) or "–"
            lines.append(f"| {i} | `{path}` | {scores[path]:.3f} | {others} |")
        lines.append("")
    history = d.get("history") or []
    if history:
        lines += ["Latency-driven rounds (round 0 is the starting network, each later round is followed by its "
                  "fine-tune; speed-ups against the unpruned source timed beside it):", "",
                  "| round | chosen candidate | MACs | pruned ms | unpruned ms | paired speed-up | MAC cut needed |",
                  "|---:|---|---:|---:|---:|---:|---:|"]
        for h in history:
            cand = f"{h['mode']} {100 * h['ratio']:.3g}%" if h.get("mode") else ("start" if h["step"] == 0 else "–")
            if h.get("layer"):
                cand += f" of `{h['layer']}`"
            cut = f"{h['needed_mac_cut']:.2f}×" if h.get("needed_mac_cut") else "–"
            speedup = f"{h['speedup']:.2f}×"
            if h.get("confirmed"):  # timed again near the goal: the first look, then all rounds pooled
                speedup += f" (first {h['confirmed']['first_speedup']:.2f}×, {h['confirmed']['rounds']} rounds)"
            lines.append(f"| {h['step']} | {cand} | {h['macs'] / 1e6:.1f} M | {h['latency_ms']:.3f} | "
                         f"{h['unpruned_ms']:.3f} | {speedup} | {cut} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    args = parse()
    record = relative(read_json(args.run / "compress.json"))
    if record["config"].get("method") != "prune":
        raise SystemExit(f"{args.run} is a {record['config'].get('method')!r} run, not a prune run")
    atomic_write_json(args.out / f"{args.name}.json", record)
    text = markdown(record, name=args.name, title=args.title, command=args.command)
    if args.note:
        text += "\n" + args.note.strip() + "\n"
    atomic_write_text(args.out / f"{args.name}.md", text)
    print(text)


if __name__ == "__main__":
    main()
