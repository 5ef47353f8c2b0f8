"""The `verify` stage: measure the final model on every target and compare each figure with its budget.

The final model is the compress stage's output when the recipe has one, else the trained model selected
by the search stage (or by the zoo stage without one). Host targets: batch-1 latency measured in the
deployment runtime. Microcontroller targets: flash and arena from the deploy stage's generated program when
it ran, else the analytic estimate (labelled).
"""

from __future__ import annotations

import warnings
from typing import Any

from devicefit.core import ArchSpec

from ._recipe import recipe_targets
from ._stage_search import selected
from ._stages import Stage, StageContext, stage

__all__ = ["VERIFY_SESSIONS", "VerifyStage", "final_model"]

# one ONNX Runtime session can sit 10-40% off the next on a shared VM (benchmarks/host_repeatability.py):
# the budget verdict takes the median over fresh sessions
VERIFY_SESSIONS = 5


def final_model(ctx: StageContext) -> dict[str, Any]:
    """The model the recipe ends with: {"source", "spec", "test_accuracy", "onnx" (path or None), "pt"}."""
    chosen = selected(ctx.records)
    out = {"source": "search" if "search" in ctx.records else "zoo", "selected": chosen["selected"],
           "spec": chosen["selected_spec"], "test_accuracy": chosen["test_accuracy"],
           "precision": "fp32", "onnx": None, "pt": chosen["selected_run_dir"] + "/model.pt"}
    if "compress" in ctx.records and ctx.records["compress"].metrics.get("onnx"):
        c = ctx.records["compress"].metrics
        out |= {"source": "compress", "test_accuracy": c["test_accuracy"], "precision": c["precision"],
                "onnx": c["onnx"]}
    return out


@stage
class VerifyStage(Stage):
    name = "verify"
    reads = ("zoo", "search", "compress", "deploy")

    def config(self, recipe: Any) -> dict[str, Any]:
        return {"targets": list(recipe.targets), "budgets": recipe.budgets,
                "latency_repeats": recipe.zoo.latency_repeats}

    def run(self, ctx: StageContext) -> tuple[dict[str, Any], dict[str, str]]:
        from devicefit import hardware as H
        from devicefit import models as M

        final = final_model(ctx)
        spec = ArchSpec.from_dict(final["spec"])
        costs = {bits: M.cost(spec, weight_bits=bits, act_bits=8) for bits in (8, 32)}
        deploy = ctx.records["deploy"].metrics.get("mcu", {}) if "deploy" in ctx.records else {}
        verdicts, figures_out = {}, {}
        for t in recipe_targets(ctx.recipe):
            # a microcontroller always runs the int8 program; a host runs the final model's own precision
            bits = 8 if t.kind == "mcu" or final["precision"] == "int8" else 32
            figures, methods = self._figures(ctx, t, final, spec, costs[bits], deploy)
            verdicts[t.name] = H.check_budgets(t, figures).to_dict()
            figures_out[t.name] = {"figures": figures, "methods": methods}
            ctx.log(f"verify: {t.name}: " + ", ".join(
                f"{x['name']} {x['value']:.4g}/{x['limit']:.4g} {x['status']}" if x["value"] is not None
                else f"{x['name']} not measured" for x in verdicts[t.name]["lines"]))
        profiles = {t.name: self._layer_profile(ctx, t, final, spec) for t in recipe_targets(ctx.recipe)
                    if t.kind == "host" and t.runtime == "onnxruntime"}
        return {"final": final, "targets": figures_out, "budgets": verdicts, "layer_profiles": profiles,
                "all_met": all(v["ok"] for v in verdicts.values())}, {}

    @staticmethod
    def _layer_profile(ctx: StageContext, t: Any, final: dict[str, Any], spec: ArchSpec) -> dict[str, Any]:
        """Per-node kernel times of the final model in ONNX Runtime's profiler, in execution order."""
        from devicefit import hardware as H
        from devicefit import models as M
        from devicefit import train as T

        source: Any = ctx.run_dir / final["onnx"] if final["onnx"] else T.load_weights(M.build(spec),
                                                                                        ctx.run_dir / final["pt"])
        prof = H.layer_latencies(source, input_shape=tuple(spec.as_kwargs()["input_shape"]),
                                 repeats=ctx.recipe.zoo.latency_repeats)
        return {"layers": [{"node": x.node, "op_type": x.op_type, "median_ms": x.median_ms} for x in prof.layers],
                "end_to_end_ms": prof.end_to_end_ms, "sum_of_layers_ms": prof.sum_of_layers_ms,
                "method": prof.method}

    def _figures(self, ctx: StageContext, t: Any, final: dict[str, Any], spec: ArchSpec, cost: Any,
                 deploy: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        figures: dict[str, Any] = {"model_bytes": cost.param_bytes}
        precision = "int8" if t.kind == "mcu" else final["precision"]
        methods = {"model_bytes": f"parameter bytes at {precision}"}
        if t.kind == "host":
            res = self._latency(ctx, t, final, spec)
            figures["latency_ms"] = res.median_ms
            m = res.measurement.method
            sessions = f"median over {m['sessions']} fresh sessions of " if m.get("sessions", 1) > 1 else ""
            methods["latency_ms"] = (f"measured: {m['runtime']} {m['runtime_version']}, {m['precision']}, batch 1, "
                                     f"{m['threads']} thread(s), {sessions}the median of {m['repeats']} runs after "
                                     f"{m['warmup']} warm-up (cv {100 * res.cv:.1f}%)")
        elif t.kind == "mcu" and t.name in deploy:
            d = deploy[t.name]
            figures |= {"flash_bytes": d["flash_bytes"], "peak_sram_bytes": d["ram_bytes"]}
            exact = "bit-exact" if d["host_bit_exact"] and all(q["bit_exact"] for q in d["qemu"]) else "NOT bit-exact"
            checked = f"{exact} vs the integer reference on {d['n_verified']} test inputs (host ASan+UBSan" + (
                f", QEMU {', '.join(q['core'] for q in d['qemu'])})" if d["qemu"] else ")")
            methods |= {"flash_bytes": f"arm-none-eabi-size of the generated int8 C program (text + data); {checked}",
                        "peak_sram_bytes": "arm-none-eabi-size of the generated program (data + bss: arena, "
                                           "I/O buffers, stack)"}
        elif t.kind == "mcu":
            figures |= {"flash_bytes": cost.param_bytes, "peak_sram_bytes": cost.peak_activation_bytes}
            methods |= {"flash_bytes": "estimated: int8 weights only (no deploy stage ran)",
                        "peak_sram_bytes": "estimated: analytic peak int8 activations (no deploy stage ran)"}
        return figures, methods

    def _latency(self, ctx: StageContext, t: Any, final: dict[str, Any], spec: ArchSpec) -> Any:
        from devicefit import hardware as H
        from devicefit import models as M
        from devicefit import train as T

        shape = tuple(spec.as_kwargs()["input_shape"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the spread is recorded with the figure
            if final["onnx"] and t.runtime == "onnxruntime":
                return H.measure_latency(ctx.run_dir / final["onnx"], t, repeats=ctx.recipe.zoo.latency_repeats,
                                         sessions=VERIFY_SESSIONS)
            model = T.load_weights(M.build(spec), ctx.run_dir / final["pt"])
            return H.measure_latency(model, t, input_shape=shape, repeats=ctx.recipe.zoo.latency_repeats)

