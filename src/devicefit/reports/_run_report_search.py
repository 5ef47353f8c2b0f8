"""The search part of a run report: every candidate's supernet accuracy against its estimated cost with the
Pareto front, the search's progress and space shrinking, the searched vs the zoo model, and how each budget
was estimated during the search (the latency models' own error included)."""

from __future__ import annotations

from typing import Any

__all__ = ["CONSTRAINT_HEADER", "SEARCH_HEADER", "constraint_rows", "plot_search", "search_rows"]

SEARCH_HEADER = ["model", "architecture", "params", "MACs", "val acc.", "test acc.", "kept"]
CONSTRAINT_HEADER = ["constraint", "budget", "searched against", "estimate", "chosen model's estimate",
                     "final model measured"]


def _search(run: dict[str, Any]) -> dict[str, Any]:
    return run["stages"].get("search", {}).get("metrics", {})  # type: ignore[no-any-return]


def _x_axis(s: dict[str, Any]) -> tuple[str, str]:
    """(metric, label) to plot candidates against: the first latency constraint, else the first constraint."""
    names = [c["name"] for c in s["search"]["constraints"]]
    pick = next((n for n in names if n.endswith(":latency_ms")), names[0] if names else "")
    unit = "ms" if pick.endswith("latency_ms") else "bytes"
    return pick, f"estimated {pick.split(':')[-1]} on {pick.split(':')[0]} ({unit})"


def plot_search(run: dict[str, Any], png: Any) -> str | None:
    """Two panels: candidates (supernet validation accuracy vs the estimated cost, Pareto front, the chosen
    architecture after channel scaling, the limit) and the best feasible accuracy by trial with shrink points."""
    s = _search(run)
    if not s or not s["search"]["evaluated"]:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric, label = _x_axis(s)
    ev = s["search"]["evaluated"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))
    if metric:
        for ok, color, name in ((True, "tab:blue", "within budget"), (False, "tab:gray", "over budget")):
            pts = [(e["metrics"][metric], 100 * e["metrics"]["accuracy"]) for e in ev if e["feasible"] is ok]
            if pts:
                ax.scatter(*zip(*pts, strict=True), s=14, color=color, alpha=0.7, label=name)
        front = sorted((e["metrics"][metric], 100 * e["metrics"]["accuracy"]) for e in ev
                       if e["number"] in set(s["search"]["pareto"].get(metric, [])))
        if front:
            ax.plot(*zip(*front, strict=True), color="tab:orange", lw=1.5, label="Pareto front")
        ax.scatter(s["chosen_estimates"][metric], 100 * s["chosen_supernet_accuracy"], marker="*", s=180,
                   color="tab:red", label="chosen (after channel scaling)", zorder=5)
        limit = next(c["limit"] for c in s["search"]["constraints"] if c["name"] == metric)
        ax.axvline(limit, color="gray", ls="--", label="search limit")
        ax.set_xlabel(label)
    ax.set_ylabel("supernet validation accuracy (%)")
    ax.set_title(f"{s['method']} on {s['space']}: {len(ev)} candidates")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    best, curve = -1.0, []
    for e in ev:
        if e["feasible"]:
            best = max(best, 100 * e["metrics"]["accuracy"])
        curve.append(best if best >= 0 else None)
    bx.plot(range(len(curve)), curve, color="tab:blue")
    for stage in s["search"]["strategy"].get("shrink", [])[1:]:
        bx.axvline(stage["after_trials"], color="tab:green", ls=":", alpha=0.8)
        bx.annotate(f"space ×{stage['fraction_of_full']:.2g}", (stage["after_trials"], min(c for c in curve if c)),
                    fontsize=7, rotation=90, va="bottom")
    bx.set_xlabel("trial")
    bx.set_ylabel("best feasible supernet accuracy (%)")
    bx.set_title("search progress (dotted: space shrinking)")
    bx.grid(alpha=0.3)
    return png(fig)  # type: ignore[no-any-return]


def _arch(spec: dict[str, Any]) -> str:
    p = spec["params"]
    return ", ".join(f"{k}={tuple(v) if isinstance(v, list) else v}" for k, v in p.items()
                     if k not in ("num_classes", "input_shape", "act"))


def search_rows(run: dict[str, Any]) -> list[list[str]]:
    """The zoo's selected model and the searched, retrained model, side by side."""
    s = _search(run)
    if not s:
        return []
    zoo = run["stages"].get("zoo", {}).get("metrics", {})
    row = next((c for c in zoo.get("candidates", []) if c["name"] == zoo.get("selected")), None)
    cmp, rt = s["comparison"], s["retrain"]
    kept_search = s["selected"] == "search"
    rows = []
    if row is not None:
        rows.append([f"zoo: {row['name']}", _arch(row["spec"]), f"{row['params']:,}", f"{row['macs'] / 1e6:.2f} M",
                     f"{100 * cmp['zoo']['val_accuracy']:.2f}%", f"{100 * cmp['zoo']['test_accuracy']:.2f}%",
                     "" if kept_search else "yes"])
    rows.append([f"search: {rt['spec']['family']}", _arch(rt["spec"]), f"{rt['params']:,}", f"{rt['macs'] / 1e6:.2f} M",
                 f"{100 * cmp['search']['val_accuracy']:.2f}%", f"{100 * cmp['search']['test_accuracy']:.2f}%",
                 "yes" if kept_search else ""])
    return rows


def constraint_rows(run: dict[str, Any], fmt: Any) -> list[list[str]]:
    """One row per budget: how the search estimated it, the chosen architecture's estimate and, when the
    final model is the searched one, the verify stage's measurement of it (prediction next to measurement)."""
    s = _search(run)
    verify = run["stages"].get("verify", {}).get("metrics", {})
    measured = {f"{t}:{x['name']}": x["value"] for t, b in verify.get("budgets", {}).items() for x in b["lines"]}
    searched_is_final = s.get("selected") == "search"
    rows = []
    for c in s.get("constraints", []):
        budget = c["name"].split(":")[-1]
        est = s["chosen_estimates"].get(c["name"])
        got = measured.get(c["name"]) if searched_is_final else None
        rows.append([c["name"], fmt(budget, c["budget"]),
                     fmt(budget, c["search_limit"]) if c["search_limit"] is not None else "—", c["estimate"],
                     fmt(budget, est) if est is not None else "—",
                     fmt(budget, got) if got is not None else ("—" if searched_is_final else "(zoo model kept)")])
    return rows
