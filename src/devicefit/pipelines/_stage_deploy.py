"""The `deploy` stage: for every microcontroller target of the recipe, convert the selected model to
int8, generate the C project, link it against the target's flash and SRAM budgets and verify it
bit-exact against the integer reference on the host (ASan+UBSan) and, when asked, under QEMU.
"""

from __future__ import annotations

from typing import Any

from devicefit.core import to_dict

from ._deploy_job import DeployJobConfig, run_deploy_job
from ._recipe import recipe_targets
from ._stage_search import selected
from ._stages import Stage, StageContext, stage

__all__ = ["DeployStage"]


@stage
class DeployStage(Stage):
    name = "deploy"
    reads = ("zoo", "search")

    def config(self, recipe: Any) -> dict[str, Any]:
        return {"deploy": to_dict(recipe.deploy), "targets": list(recipe.targets), "budgets": recipe.budgets,
                "data_dir": recipe.data.data_dir}

    def run(self, ctx: StageContext) -> tuple[dict[str, Any], dict[str, str]]:
        d = ctx.recipe.deploy
        source = ctx.run_dir / selected(ctx.records)["selected_run_dir"]
        mcu: dict[str, Any] = {}
        artefacts: dict[str, str] = {}
        for t in recipe_targets(ctx.recipe):
            if t.kind != "mcu" or not d.mcu:
                continue
            out = ctx.stage_dir / t.name
            cfg = DeployJobConfig(source=str(source), target=t.name, out=str(out), n_test=d.verify_samples,
                                  n_qemu=min(4, d.verify_samples), data_dir=ctx.recipe.data.data_dir, qemu=d.qemu)
            rep = run_deploy_job(cfg, echo=lambda s, name=t.name: ctx.log(f"deploy: {name}: {s}"), target_budgets=t)
            mcu[t.name] = _summary(rep)
            artefacts[f"c_project_{t.name}"] = str((out / "c").relative_to(ctx.run_dir))
            artefacts[f"report_{t.name}"] = str((out / "deploy.md").relative_to(ctx.run_dir))
        return {"mcu": mcu}, artefacts


def _summary(rep: dict[str, Any]) -> dict[str, Any]:
    fit, v, arena = rep["memory_fit"], rep["verification"], rep["arena"]
    qemu = v.get("qemu", [])
    return {"flash_bytes": fit["flash_bytes"], "ram_bytes": fit["sram_bytes"], "fits": fit["fits"],
            "missing_flash_bytes": fit["missing_flash_bytes"], "missing_sram_bytes": fit["missing_sram_bytes"],
            "arena": arena, "host_bit_exact": v["host_bit_exact"], "n_verified": v["n_test"],
            "accuracy_int8_reference": v["accuracy_int8_reference"], "accuracy_c_host": v["accuracy_c_host"],
            "qemu": [{k: q[k] for k in ("core", "qemu_machine", "n_inputs", "bit_exact", "instructions_per_inference")}
                     for q in qemu]}
