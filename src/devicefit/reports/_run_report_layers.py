"""Per-layer views of a run's final model: kernel time per node in ONNX Runtime's profiler (host targets)
and the microcontroller arena plan (which tensor lives where, and when), with live bytes per op step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["plot_arena", "plot_layer_latency"]

_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray",
           "tab:olive", "tab:cyan")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_layer_latency(run: dict[str, Any], png: Callable[[Any], str]) -> str | None:
    """Kernel time of every node the runtime executed (execution order), coloured by op type, per host target."""
    profiles = run["stages"].get("verify", {}).get("metrics", {}).get("layer_profiles", {})
    profiles = {t: p for t, p in profiles.items() if p.get("layers")}
    if not profiles:
        return None
    plt = _plt()
    fig, axes = plt.subplots(len(profiles), 1, figsize=(10, 3.2 * len(profiles)), squeeze=False)
    for ax, (target, prof) in zip(axes[:, 0], profiles.items(), strict=True):
        layers = prof["layers"]
        kinds = list(dict.fromkeys(x["op_type"] for x in layers))
        colors = [_COLORS[kinds.index(x["op_type"]) % len(_COLORS)] for x in layers]
        ax.bar(range(len(layers)), [1000 * x["median_ms"] for x in layers], color=colors)
        for k in kinds:
            ax.bar([0], [0], color=_COLORS[kinds.index(k) % len(_COLORS)], label=k)
        ax.set_xlabel("node (execution order)")
        ax.set_ylabel("kernel time (µs, median)")
        m = prof["method"]
        ax.set_title(f"{target}: {m['precision']} per-node kernel time, {m['threads']} thread(s); sum "
                     f"{prof['sum_of_layers_ms']:.3g} ms of {prof['end_to_end_ms']:.3g} ms end to end", fontsize=9)
        ax.legend(fontsize=7, ncol=4)
        ax.grid(alpha=0.3, axis="y")
    return png(fig)


def plot_arena(run: dict[str, Any], png: Callable[[Any], str]) -> str | None:
    """The planned arena of each microcontroller target: one rectangle per buffer (op steps it is live ×
    its byte range), the arena size, and the highest byte in use at each step."""
    mcu = run["stages"].get("deploy", {}).get("metrics", {}).get("mcu", {})
    plans = {t: d["arena"] for t, d in mcu.items() if d.get("arena", {}).get("buffers")}
    if not plans:
        return None
    plt = _plt()
    from matplotlib.patches import Rectangle

    fig, axes = plt.subplots(1, len(plans), figsize=(6.5 * len(plans), 3.8), squeeze=False)
    for ax, (target, plan) in zip(axes[0], plans.items(), strict=True):
        bufs = plan["buffers"]
        last = max(b["last_step"] for b in bufs) + 1
        for b in bufs:
            color = "tab:orange" if b["kind"] == "scratch" else "tab:blue"
            ax.add_patch(Rectangle((b["first_step"], b["offset"] / 1024), b["last_step"] - b["first_step"] + 1,
                                   b["size_bytes"] / 1024, facecolor=color, edgecolor="white", alpha=0.75, lw=0.5))
        top = [max((b["offset"] + b["size_bytes"] for b in bufs if b["first_step"] <= s <= b["last_step"]),
                   default=0) / 1024 for s in range(last)]
        ax.step(range(last), top, where="post", color="black", lw=1, label="highest byte in use")
        ax.axhline(plan["arena_bytes"] / 1024, color="tab:red", ls="--",
                   label=f"arena {plan['arena_bytes'] / 1024:.1f} KiB ({plan['planner']})")
        ax.set_xlim(0, last)
        ax.set_ylim(0, max(plan["arena_bytes"] / 1024, max(top)) * 1.1)
        ax.set_xlabel("op step")
        ax.set_ylabel("arena offset (KiB)")
        ax.set_title(f"{target}: arena plan (blue tensors, orange scratch)", fontsize=9)
        ax.legend(fontsize=7)
    return png(fig)
