"""The `zoo` stage: cost every candidate zoo model, check it against each target's budgets, measure its
latency on the host targets at the precision the recipe deploys (int8 when it quantizes), and train the
feasible candidates with the most capacity.

Memory figures here are analytic (int8 weights and activations, batch 1) and say so; the deploy stage
replaces them with the generated C program's real flash and arena sizes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from devicefit.core import ArchSpec, to_dict

from ._recipe import recipe_targets
from ._search_cost import deployed_precision, measure_model_latency
from ._stages import Stage, StageContext, stage
from ._train_job import ModelConfig, TrainJobConfig, run_train_job

__all__ = ["ZOO_SESSIONS", "ZooStage", "candidate_figures"]

# a zoo model is judged at the precision it would be deployed in, like the search's candidates, and by the
# median of fresh sessions (one session can sit 10-40% off the next on a shared VM)
ZOO_SESSIONS = 3


def candidate_figures(spec: ArchSpec, targets: list[Any], latency_repeats: int, precision: str = "fp32"
                      ) -> dict[str, Any]:
    """Analytic int8 cost, latency measured on each host target at the deployed `precision` (median over
    `ZOO_SESSIONS` fresh sessions), and the budget verdict per target."""
    from devicefit import hardware as H
    from devicefit import models as M

    cost = M.cost(spec, weight_bits=8, act_bits=8)
    shape = tuple(spec.as_kwargs()["input_shape"])
    latency: dict[str, Any] = {}
    for t in targets:
        if t.kind == "host":
            res = measure_model_latency(M.build(spec).eval(), t, precision, input_shape=shape,
                                        repeats=latency_repeats, sessions=ZOO_SESSIONS)
            latency[t.name] = {"median_ms": res.median_ms, "cv": res.cv, "stable": res.stable,
                               "precision": precision, "method": res.measurement.method}
    verdicts = {}
    for t in targets:
        figures: dict[str, Any] = {"model_bytes": cost.param_bytes}
        if t.kind == "mcu":
            figures |= {"flash_bytes": cost.param_bytes, "peak_sram_bytes": cost.peak_activation_bytes}
        if t.name in latency:
            figures["latency_ms"] = latency[t.name]["median_ms"]
        verdicts[t.name] = H.check_budgets(t, figures).to_dict()
    return {"spec": spec.to_dict(), "params": cost.params, "macs": cost.macs, "param_bytes_int8": cost.param_bytes,
            "peak_activation_bytes_int8": cost.peak_activation_bytes, "latency": latency, "budgets": verdicts,
            "feasible": not any(x["met"] is False for v in verdicts.values() for x in v["lines"]),
            "memory_method": "analytic: int8 weights (flash ≈ weights only) and peak int8 activations, batch 1"}


@stage
class ZooStage(Stage):
    name = "zoo"

    def config(self, recipe: Any) -> dict[str, Any]:
        return {"data": to_dict(recipe.data), "zoo": to_dict(recipe.zoo), "train": to_dict(recipe.train),
                "targets": list(recipe.targets), "budgets": recipe.budgets, "precision": deployed_precision(recipe)}

    def run(self, ctx: StageContext) -> tuple[dict[str, Any], dict[str, str]]:
        from devicefit import data as D
        from devicefit import models as M

        r = ctx.recipe
        probe = D.load_dataset(r.data.name, "test", r.data.data_dir, **r.data.options)
        targets = recipe_targets(r)
        rows = []
        for cand in r.zoo.candidates:
            spec = M.default_spec(cand.name, num_classes=probe.num_classes, input_shape=probe.input_shape,
                                  **cand.params)
            rows.append({"name": cand.name, **candidate_figures(spec, targets, r.zoo.latency_repeats,
                                                                deployed_precision(r))})
            ctx.log(f"zoo: {spec}: {rows[-1]['macs'] / 1e6:.1f} M MACs, "
                    f"{'fits' if rows[-1]['feasible'] else 'over budget'}")
        feasible = sorted((x for x in rows if x["feasible"]), key=lambda x: -x["macs"])
        if not feasible:
            ctx.log("zoo: warning: no candidate fits every budget; training the smallest one as the baseline")
            feasible = sorted(rows, key=lambda x: x["macs"])[:1]
        for row in feasible[: r.zoo.train_top]:
            row["train"] = self._train(ctx, row)
        trained = [x for x in rows if "train" in x]
        best = max(trained, key=lambda x: x["train"]["test_accuracy"])
        return {"candidates": rows, "selected": best["name"], "selected_spec": best["spec"],
                "selected_run_dir": best["train"]["run_dir"], "test_accuracy": best["train"]["test_accuracy"],
                "data_source": best["train"]["data_source"]}, {"model": best["train"]["run_dir"] + "/model.pt"}

    @staticmethod
    def _train(ctx: StageContext, row: dict[str, Any]) -> dict[str, Any]:
        r = ctx.recipe
        spec = ArchSpec.from_dict(row["spec"])
        params = {k: v for k, v in spec.as_kwargs().items() if k not in ("num_classes", "input_shape")}
        job = TrainJobConfig(data=r.data, model=ModelConfig(row["name"], params), train=r.train)
        run_dir = ctx.stage_dir / f"{row['name']}-{ArchSpec('job', to_dict(job)).spec_id[:8]}"
        job = dataclasses.replace(job, run_dir=str(run_dir))
        ctx.log(f"zoo: training {spec} in {run_dir.relative_to(ctx.run_dir)}")
        metrics = run_train_job(job, progress=ctx.progress, echo=None)
        ctx.log(f"zoo: {row['name']}: test accuracy {100 * metrics['test_accuracy']:.2f}%")
        keep = ("test_accuracy", "val_accuracy", "train_seconds", "data_source", "n_train", "n_val", "n_test")
        return {k: metrics[k] for k in keep} | {"run_dir": str(run_dir.relative_to(ctx.run_dir)),
                                                 "history": metrics["history"]}
