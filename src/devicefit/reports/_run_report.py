"""The report of a `devicefit run`: one self-contained HTML page (plots embedded as PNG) and a Markdown
summary, rebuilt from the run directory's stage records alone (no torch), so `devicefit report RUN_DIR`
works on any machine that has the folder.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from devicefit.core import ConfigError, atomic_write_text, read_json

from ._run_report_layers import plot_arena, plot_layer_latency
from ._run_report_search import (
    CONSTRAINT_HEADER,
    SEARCH_HEADER,
    constraint_rows,
    plot_search,
    search_rows,
)
from ._tables import format_bytes

__all__ = ["load_run", "render_run_report", "write_run_report"]

_STAGE_ORDER = ("zoo", "search", "compress", "deploy", "verify")


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """{"recipe": ..., "stages": {name: record}} from a run directory; ConfigError when it is not one."""
    run_dir = Path(run_dir)
    head = run_dir / "config.json"
    if not head.is_file():
        raise ConfigError(f"{run_dir} is not a `devicefit run` directory: config.json is missing")
    stages = {p.stem: read_json(p) for p in sorted((run_dir / "stages").glob("*.json"))}
    if not stages:
        raise ConfigError(f"{run_dir} has no finished stage (stages/*.json); run `devicefit run` first")
    return {"recipe": read_json(head).get("config", {}), "stages": stages, "run_dir": str(run_dir)}


# --- plots ------------------------------------------------------------------------------------------------


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _host_target(run: dict[str, Any]) -> str | None:
    zoo = run["stages"].get("zoo", {}).get("metrics", {})
    for cand in zoo.get("candidates", []):
        if cand.get("latency"):
            return next(iter(cand["latency"]))
    return None


def plot_accuracy_latency(run: dict[str, Any]) -> str | None:
    """Accuracy vs measured latency: trained zoo candidates and the final model, budget as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    host = _host_target(run)
    zoo = run["stages"].get("zoo", {}).get("metrics", {})
    verify = run["stages"].get("verify", {}).get("metrics", {})
    if host is None or not zoo:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for cand in zoo["candidates"]:
        if "train" in cand and host in cand["latency"]:
            ax.scatter(cand["latency"][host]["median_ms"], 100 * cand["train"]["test_accuracy"], color="tab:blue")
            ax.annotate(f"{cand['name']} ({cand['latency'][host].get('precision', 'fp32')})",
                        (cand["latency"][host]["median_ms"],
                                                  100 * cand["train"]["test_accuracy"]), fontsize=8)
    fig_v = verify.get("targets", {}).get(host, {}).get("figures", {})
    if "latency_ms" in fig_v:
        final = verify["final"]
        ax.scatter(fig_v["latency_ms"], 100 * final["test_accuracy"], color="tab:red", marker="*", s=160,
                   label=f"final ({final['precision']})")
    limit = next((x["limit"] for x in verify.get("budgets", {}).get(host, {}).get("lines", [])
                  if x["name"] == "latency_ms"), None)
    if limit is not None:
        ax.axvline(limit, color="gray", ls="--", label=f"budget {limit:g} ms")
    ax.set_xlabel(f"measured latency on {host} (ms, batch 1, median)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("accuracy vs measured latency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def plot_memory(run: dict[str, Any]) -> str | None:
    """Flash and SRAM of the final model on each microcontroller target, against the budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    verify = run["stages"].get("verify", {}).get("metrics", {})
    rows = [(t, b) for t, b in verify.get("budgets", {}).items()
            if any(x["name"] == "peak_sram_bytes" for x in b["lines"])]
    if not rows:
        return None
    fig, axes = plt.subplots(1, len(rows), figsize=(4.5 * len(rows), 3.2), squeeze=False)
    for ax, (target, b) in zip(axes[0], rows, strict=True):
        lines = [x for x in b["lines"] if x["name"] in ("flash_bytes", "peak_sram_bytes") and x["value"] is not None]
        names = [x["name"].replace("_bytes", "") for x in lines]
        colors = ["tab:green" if x["met"] else "tab:red" for x in lines]
        ax.barh(names, [x["value"] / 1024 for x in lines], color=colors)
        ax.scatter([x["limit"] / 1024 for x in lines], names, marker="|", s=600, color="black", label="budget")
        ax.set_xlabel("KiB")
        ax.set_title(target)
        ax.legend(fontsize=8)
    return _png(fig)


def plot_training(run: dict[str, Any]) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    zoo = run["stages"].get("zoo", {}).get("metrics", {})
    trained = [c for c in zoo.get("candidates", []) if "train" in c and c["train"].get("history")]
    if not trained:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for c in trained:
        h = c["train"]["history"]
        ax.plot([e["epoch"] for e in h], [100 * (e.get("val_acc") or 0) for e in h], label=c["name"])
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


# --- text -------------------------------------------------------------------------------------------------


def _fmt(name: str, value: float | None) -> str:
    if value is None:
        return "—"
    if name.endswith("_bytes"):
        return format_bytes(int(value))
    return f"{value:.3g} ms" if name == "latency_ms" else f"{value:.4g}"


def verdict_rows(run: dict[str, Any]) -> list[list[str]]:
    """[target, budget, figure, limit, status, margin, method] for every budget of every target."""
    verify = run["stages"].get("verify", {}).get("metrics", {})
    rows = []
    for target, b in verify.get("budgets", {}).items():
        methods = verify["targets"][target]["methods"]
        for x in b["lines"]:
            margin = "—" if x["margin"] is None else f"{100 * x['margin']:+.0f}%"
            rows.append([target, x["name"], _fmt(x["name"], x["value"]), _fmt(x["name"], x["limit"]), x["status"],
                         margin, methods.get(x["name"], "")])
    return rows


def candidate_rows(run: dict[str, Any]) -> list[list[str]]:
    zoo = run["stages"].get("zoo", {}).get("metrics", {})
    rows = []
    for c in zoo.get("candidates", []):
        lat = "; ".join(f"{t} {v.get('precision', 'fp32')} {v['median_ms']:.3g} ms (cv {100 * v['cv']:.1f}%)"
                        for t, v in c["latency"].items())
        acc = f"{100 * c['train']['test_accuracy']:.2f}%" if "train" in c else "not trained"
        rows.append([c["name"], f"{c['params']:,}", f"{c['macs'] / 1e6:.2f} M", format_bytes(c["param_bytes_int8"]),
                     format_bytes(c["peak_activation_bytes_int8"]), lat or "—",
                     "yes" if c["feasible"] else "no", acc])
    return rows


def deploy_rows(run: dict[str, Any]) -> list[list[str]]:
    """[target, flash, SRAM, arena / naive / lower bound, verification, instructions, int8 C accuracy]."""
    mcu = run["stages"].get("deploy", {}).get("metrics", {}).get("mcu", {})
    rows = []
    for target, d in mcu.items():
        a = d["arena"]
        qemu = d["qemu"]
        exact = d["host_bit_exact"] and all(q["bit_exact"] for q in qemu)
        where = "host (ASan+UBSan)" + "".join(f", {q['core']} (QEMU {q['qemu_machine']})" for q in qemu)
        instr = "; ".join(f"{q['core']} {q['instructions_per_inference'] / 1e6:.2f} M" for q in qemu) or "—"
        rows.append([target, format_bytes(d["flash_bytes"]), format_bytes(d["ram_bytes"]),
                     f"{format_bytes(a['arena_bytes'])} / {format_bytes(a['naive_bytes'])} / "
                     f"{format_bytes(a['lower_bound_bytes'])}",
                     f"{'bit-exact' if exact else 'MISMATCH'} on {d['n_verified']} inputs: {where}", instr,
                     f"{100 * d['accuracy_c_host']:.1f}% (n={d['n_verified']})"])
    return rows


def compress_rows(run: dict[str, Any]) -> list[list[str]]:
    """[model, test accuracy, ONNX bytes, MACs, latency] before and after compression."""
    c = run["stages"].get("compress", {}).get("metrics", {})
    if not c.get("onnx"):
        return []
    return [[name, f"{100 * side['accuracy']:.2f}%", format_bytes(side["onnx_bytes"]), f"{side['macs'] / 1e6:.2f} M",
             f"{c[key]:.3g} ms"] for name, side, key in (("fp32 (ONNX)", c["before"], "before_latency_ms"),
                                                        ("int8 QDQ (ONNX)", c["after"], "after_latency_ms"))]


COMPRESS_HEADER = ["model", "test acc.", "file", "MACs", "latency (measured side by side)"]

DEPLOY_HEADER = ["target", "flash (linked)", "SRAM (linked)", "arena planned / naive / lower bound",
                 "verification", "instructions per inference", "int8 C accuracy"]


def summary_lines(run: dict[str, Any]) -> list[str]:
    verify = run["stages"].get("verify", {}).get("metrics", {})
    zoo = run["stages"].get("zoo", {}).get("metrics", {})
    out = []
    if verify:
        final = verify["final"]
        spec = final["spec"]
        params = ", ".join(f"{k}={v}" for k, v in spec["params"].items() if k not in ("num_classes", "input_shape"))
        out.append(f"Final model: {spec['family']}({params}), {final['precision']}, from the {final['source']} "
                   f"stage; test accuracy {100 * final['test_accuracy']:.2f}% on {zoo.get('data_source', '?')}.")
        met = "every budget met" if verify["all_met"] else "NOT every budget met"
        out.append(f"Verdict: {met} on {', '.join(verify['budgets'])}.")
    return out


_CSS = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}table{border-collapse:collapse;"
        "margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;font-size:.9em}th{background:#f3f3f3}"
        ".met{color:#176d17}.over{color:#b00;font-weight:bold}img{max-width:100%}")


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    def cell(v: str) -> str:
        cls = f' class="{v}"' if v in ("met", "over") else ""
        return f"<td{cls}>{html.escape(v)}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(v) for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


VERDICT_HEADER = ["target", "budget", "figure", "limit", "status", "margin", "how it was obtained"]
CANDIDATE_HEADER = ["zoo model", "params", "MACs", "int8 weights", "int8 peak act.", "latency (deployed precision)",
                    "fits", "test acc."]


def render_run_report(run: dict[str, Any]) -> tuple[str, str]:
    """(html, markdown) for a loaded run."""
    name = run["recipe"].get("name", "run")
    plots = [(t, p) for t, p in (("Accuracy vs measured latency", plot_accuracy_latency(run)),
                                 ("Architecture search", plot_search(run, _png)),
                                 ("Microcontroller memory vs budget", plot_memory(run)),
                                 ("Microcontroller memory map (arena plan)", plot_arena(run, _png)),
                                 ("Per-layer latency of the final model", plot_layer_latency(run, _png)),
                                 ("Training", plot_training(run))) if p]
    parts = [f"<h1>devicefit report: {html.escape(name)}</h1>"]
    parts += [f"<p>{html.escape(s)}</p>" for s in summary_lines(run)]
    parts += ["<h2>Budgets</h2>", _html_table(VERDICT_HEADER, verdict_rows(run))]
    for title, png in plots:
        parts += [f"<h2>{title}</h2>", f'<img alt="{html.escape(title)}" src="data:image/png;base64,{png}">']
    if search_rows(run):
        parts += ["<h2>Searched vs zoo model</h2>", _html_table(SEARCH_HEADER, search_rows(run)),
                  "<p>Both trained from scratch with the same recipe; the model with the better validation accuracy "
                  "goes on to compression and deployment.</p>",
                  "<h3>How the search estimated each budget</h3>", _html_table(CONSTRAINT_HEADER,
                                                                            constraint_rows(run, _fmt))]
    if compress_rows(run):
        parts += ["<h2>Compression</h2>", _html_table(COMPRESS_HEADER, compress_rows(run))]
    if deploy_rows(run):
        parts += ["<h2>Microcontroller deployment</h2>", _html_table(DEPLOY_HEADER, deploy_rows(run)),
                  "<p>Instruction counts are exact guest instructions per inference from a QEMU plugin: a "
                  "repeatable cost proxy, not a latency.</p>"]
    parts += ["<h2>Zoo candidates</h2>", _html_table(CANDIDATE_HEADER, candidate_rows(run))]
    stages = [[n, f"{r['metrics'].get('stage_seconds', 0):.1f} s", r["config"].get("fingerprint", "")]
              for n, r in sorted(run["stages"].items(), key=lambda kv: _order(kv[0]))]
    parts += ["<h2>Stages</h2>", _html_table(["stage", "time", "fingerprint"], stages)]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>devicefit report: {html.escape(name)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>")
    md = [f"# devicefit report: {name}", "", *summary_lines(run), "", "## Budgets", "",
          _md_table(VERDICT_HEADER, verdict_rows(run)),
          *(["## Searched vs zoo model", "", _md_table(SEARCH_HEADER, search_rows(run)), "### How the search "
             "estimated each budget", "", _md_table(CONSTRAINT_HEADER, constraint_rows(run, _fmt))]
            if search_rows(run) else []),
          *(["## Compression", "", _md_table(COMPRESS_HEADER, compress_rows(run))] if compress_rows(run) else []),
          *(["## Microcontroller deployment", "", _md_table(DEPLOY_HEADER, deploy_rows(run))] if deploy_rows(run)
            else []),
          "## Zoo candidates", "",
          _md_table(CANDIDATE_HEADER, candidate_rows(run))]
    return page, "\n".join(md)


def _order(name: str) -> int:
    return _STAGE_ORDER.index(name) if name in _STAGE_ORDER else len(_STAGE_ORDER)


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def esc(v: str) -> str:
        return v.replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_run_report(run_dir: str | Path) -> dict[str, str]:
    """Write `report.html` and `report.md` into `run_dir` (atomically); return their paths."""
    run = load_run(run_dir)
    page, md = render_run_report(run)
    html_path = atomic_write_text(Path(run_dir) / "report.html", page)
    md_path = atomic_write_text(Path(run_dir) / "report.md", md)
    return {"html": str(html_path), "markdown": str(md_path)}
