"""The `compress` stage: post-training int8 quantization of the selected model (search stage, else zoo
stage) to ONNX QDQ (uint8 activations, per-channel int8 weights: the format that runs fast on x86 ONNX
Runtime), with its accuracy on the test split and its latency measured side by side with the fp32 model
on the first host target.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from devicefit.core import ArchSpec, to_dict

from ._compress_job import CompressJobConfig, run_compress_job
from ._recipe import recipe_targets
from ._stage_search import selected
from ._stages import Stage, StageContext, stage

__all__ = ["CompressStage"]


@stage
class CompressStage(Stage):
    name = "compress"
    reads = ("zoo", "search")

    def config(self, recipe: Any) -> dict[str, Any]:
        return {"compress": to_dict(recipe.compress), "targets": list(recipe.targets),
                "data_dir": recipe.data.data_dir}

    def run(self, ctx: StageContext) -> tuple[dict[str, Any], dict[str, str]]:
        c = ctx.recipe.compress
        if c.quantize == "none":
            return {"onnx": None}, {}
        chosen = selected(ctx.records)
        hosts = [t for t in recipe_targets(ctx.recipe) if t.kind == "host" and t.runtime == "onnxruntime"]
        cfg = CompressJobConfig(source=str(ctx.run_dir / chosen["selected_run_dir"]), method="quantize",
                                run_dir="pending", n_calibration=c.calibration_samples,
                                target=hosts[0].name if hosts else "host-ort")
        # one folder per job config: a new source model gets a new folder, a rerun finds its own
        out = ctx.stage_dir / f"int8-{ArchSpec('job', to_dict(cfg)).spec_id[:8]}"
        cfg = dataclasses.replace(cfg, run_dir=str(out))
        rec = run_compress_job(cfg, echo=lambda s: ctx.log(f"compress: {s}"))
        before, after = rec["before"], rec["after"]
        ctx.log(f"compress: int8 accuracy {100 * after['accuracy']:.2f}% (fp32 {100 * before['accuracy']:.2f}%), "
                f"latency {rec['after_latency_ms']:.3g} ms (fp32 {rec['before_latency_ms']:.3g} ms)")
        onnx = str((out / "model.onnx").relative_to(ctx.run_dir))
        return {"onnx": onnx, "precision": "int8", "test_accuracy": after["accuracy"],
                "fp32_test_accuracy": before["accuracy"], "before": before, "after": after,
                "before_latency_ms": rec["before_latency_ms"], "after_latency_ms": rec["after_latency_ms"],
                "runtime_ops": rec["details"].get("runtime_ops")}, {"onnx": onnx}
