"""The `search` stage: hardware-aware NAS inside `devicefit run` (HSCoNAS-style by default).

Steps, each resumable from `stages/search/`: fit a latency model per host latency budget (measured
architectures of the space at the deployed precision); train a weight-sharing supernet by uniform single-path
sampling; search (Optuna ask/tell, SQLite study) for the best validation accuracy of supernet paths whose
estimated costs fit every budget; scale the winner's channels into the remaining budget; retrain the chosen
architecture from scratch with the recipe's `train`, exactly as the zoo models were; keep whichever of the
searched and the zoo model has the better validation accuracy.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from devicefit.core import ArchSpec, BudgetError, read_jsonl, to_dict

from ._recipe import recipe_targets
from ._search_cost import build_cost_model, deployed_precision, utilisation
from ._stages import Stage, StageContext, stage
from ._train_job import ModelConfig, TrainJobConfig, run_train_job

__all__ = ["SearchStage", "selected"]


def selected(records: dict[str, Any]) -> dict[str, Any]:
    """The record metrics of the model the later stages take: the search stage's choice when it ran, else the
    zoo stage's (both carry `selected`, `selected_spec`, `selected_run_dir`, `test_accuracy`)."""
    return (records["search"] if "search" in records else records["zoo"]).metrics  # type: ignore[no-any-return]


def _tag(body: Any) -> str:
    return ArchSpec("job", body).spec_id[:8]


class _SubnetScorer:
    """Validation accuracy of a supernet path after BatchNorm re-estimation; results are appended to a JSONL
    file, so a resumed search and the channel scaling never score a path twice. Evaluation runs in batches of
    `eval_batch_size` (64: twice as fast on this CPU as 256, whose 32×32 activations of wide paths spill the
    cache; accuracy in eval mode does not depend on the batch size)."""

    def __init__(self, supernet: Any, train: Any, val: Any, *, bn_batches: int, batch_size: int, path: Path,
                 seed: int, eval_batch_size: int = 64) -> None:
        self.supernet, self.train, self.val = supernet, train, val
        self.bn_batches, self.batch_size, self.path, self.seed = bn_batches, batch_size, path, seed
        self.eval_batch_size = eval_batch_size
        self.cache = {row["spec_json"]: float(row["val_accuracy"]) for row in read_jsonl(path)
                      if "spec_json" in row and "val_accuracy" in row}

    def __call__(self, spec: ArchSpec) -> float:
        from devicefit import train as T

        key = spec.to_json()
        if key not in self.cache:
            net = T.recalibrate_bn_(self.supernet.extract(spec), self.train, batches=self.bn_batches,
                                    batch_size=self.batch_size, seed=self.seed)
            self.cache[key] = float(T.evaluate(net, self.val, batch_size=self.eval_batch_size)["accuracy"])
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"spec_json": key, "val_accuracy": self.cache[key]}) + "\n")
        return self.cache[key]


@stage
class SearchStage(Stage):
    name = "search"
    reads = ("zoo",)

    def config(self, recipe: Any) -> dict[str, Any]:
        return {"search": to_dict(recipe.search), "data": to_dict(recipe.data), "train": to_dict(recipe.train),
                "targets": list(recipe.targets), "budgets": recipe.budgets, "precision": deployed_precision(recipe),
                "latency_repeats": recipe.zoo.latency_repeats}

    def run(self, ctx: StageContext) -> tuple[dict[str, Any], dict[str, str]]:
        from devicefit import data as D
        from devicefit import search as S
        from devicefit import space as SP

        r, cfg = ctx.recipe, ctx.recipe.search
        space = SP.get_space(cfg.space)
        train_full = D.load_dataset(r.data.name, "train", r.data.data_dir, **r.data.options)
        train, val = D.split_train_val(train_full, r.data.val_fraction, seed=r.train.seed)
        shape, classes = tuple(train.input_shape), train.num_classes
        precision = deployed_precision(r)
        costs = build_cost_model(space, recipe_targets(r), precision, ctx.stage_dir, n_latency=cfg.latency_samples,
                                 latency_margin=cfg.latency_margin, num_classes=classes, input_shape=shape,
                                 repeats=r.zoo.latency_repeats, seed=cfg.seed, log=ctx.log)
        for lm in costs.latency_models:
            d = lm.to_dict()
            ctx.log(f"search: latency model for {lm.target}: leave-one-out error median "
                    f"{100 * d['loo_median_abs_rel_error']:.1f}%, max {100 * d['loo_max_abs_rel_error']:.1f}%")
        supernet, supernet_dir, supernet_history = self._supernet(ctx, space, train, classes, shape)
        score = _SubnetScorer(supernet, train, val, bn_batches=cfg.bn_batches, batch_size=r.train.batch_size,
                              path=supernet_dir / f"scores-bn{cfg.bn_batches}-seed{cfg.seed}.jsonl", seed=cfg.seed)

        def objective(spec: ArchSpec) -> dict[str, float]:
            return {"accuracy": score(spec), **costs.estimate(spec)}

        search_cfg = S.SearchConfig(method=cfg.method, n_trials=cfg.trials, seed=cfg.seed, metric="accuracy",
                                    constraints=tuple(S.Constraint(n, lim) for n, lim in costs.limits.items()),
                                    options=cfg.options)
        result = self._search(ctx, space, objective, costs.estimate, search_cfg,
                              score.path.relative_to(ctx.run_dir).as_posix())
        if result.best is None:
            raise BudgetError(f"search: none of {len(result.history)} candidates of {cfg.space!r} was estimated to "
                              f"meet the budgets ({', '.join(f'{k} <= {v:.4g}' for k, v in costs.limits.items())})")
        chosen, scaling = result.best.spec, []
        if cfg.channel_scaling and costs.limits:
            chosen, scaling = S.scale_channels(space, chosen, lambda s: utilisation(costs.estimate(s), costs.limits),
                                               1.0, score=score)
            ctx.log(f"search: channel scaling {result.best.spec['widths']} → {chosen['widths']} "
                    f"({len(scaling)} step(s)); supernet accuracy {100 * score(result.best.spec):.1f}% → "
                    f"{100 * score(chosen):.1f}%")
        retrain = self._retrain(ctx, space.model_spec(chosen, num_classes=classes, input_shape=shape))
        metrics = self._choose(ctx, retrain)
        metrics |= {
            "space": cfg.space, "method": cfg.method, "precision": precision,
            "search": result.to_dict(), "searched_spec": result.best.spec.to_dict(),
            "chosen_arch": chosen.to_dict(), "chosen_estimates": costs.estimate(chosen),
            "chosen_supernet_accuracy": score(chosen), "channel_scaling": scaling,
            "constraints": costs.describe, "latency_models": [m.to_dict() for m in costs.latency_models],
            "supernet_history": supernet_history, "retrain": retrain,
        }
        return metrics, {"model": metrics["selected_run_dir"] + "/model.pt"}

    # -- steps --------------------------------------------------------------------------------------------

    @staticmethod
    def _supernet(ctx: StageContext, space: Any, train: Any, classes: int, shape: tuple[int, ...]
                  ) -> tuple[Any, Path, list[dict[str, Any]]]:
        """Train the supernet by `search.path_sampling` (`train.fit_supernet`: the random paths of each step are
        drawn from a generator seeded by (seed, epoch, batch), so a resumed run samples the same paths)."""
        from devicefit import data as D
        from devicefit import train as T

        r, cfg = ctx.recipe, ctx.recipe.search
        supernet = space.supernet(num_classes=classes, input_shape=shape)
        zoo_net, start = SearchStage._zoo_model(ctx, space) if cfg.warm_start or cfg.distill else (None, None)
        if cfg.warm_start and start is not None:
            supernet.inherit_(zoo_net, start)
            ctx.log(f"search: supernet starts from the zoo's trained {ctx.records['zoo'].metrics['selected']} "
                    f"({start})")
        teacher = zoo_net if cfg.distill else None
        tcfg = dataclasses.replace(r.train, epochs=cfg.supernet_epochs)
        tag = _tag({"space": cfg.space, "train": to_dict(tcfg), "data": to_dict(r.data), "paths": cfg.seed,
                    "start": str(start) if cfg.warm_start else None, "teacher": teacher is not None,
                    "zoo": ctx.records["zoo"].metrics["selected_run_dir"],
                    **({} if cfg.path_sampling == "uniform" else {"sampling": [cfg.path_sampling, cfg.n_random]})})
        run_dir = ctx.stage_dir / f"supernet-{tag}"
        ctx.log(f"search: training the {cfg.space} supernet for {cfg.supernet_epochs} epoch(s) in "
                f"{run_dir.relative_to(ctx.run_dir)}" + (" (distilling from the zoo model)" if teacher else ""))
        result = T.fit_supernet(supernet, train, tcfg, run_dir=run_dir, progress=ctx.progress,
                                log=lambda s: ctx.log(f"search: supernet {s}"), seed_paths=cfg.seed,
                                augment_default=D.DATASETS.get(r.data.name).augment, teacher=teacher,
                                path_sampling=cfg.path_sampling, n_random=cfg.n_random)
        return supernet, run_dir, [h.to_dict() for h in result.history]

    @staticmethod
    def _zoo_model(ctx: StageContext, space: Any) -> tuple[Any, ArchSpec | None]:
        """The zoo stage's trained model and its spec in `space` (None when the space does not hold it)."""
        from devicefit import models as M
        from devicefit import train as T

        zoo = ctx.records["zoo"].metrics
        model_spec = ArchSpec.from_dict(zoo["selected_spec"])
        net = T.load_weights(M.build(model_spec), ctx.run_dir / zoo["selected_run_dir"] / "model.pt").eval()
        from_model = getattr(space, "from_model_spec", None)
        return net, (from_model(model_spec) if from_model is not None else None)

    @staticmethod
    def _search(ctx: StageContext, space: Any, objective: Any, estimate: Any, search_cfg: Any, scores: str) -> Any:
        from rich.progress import Progress

        from devicefit import search as S

        # the study is named by what decides its trials, not by their number: more trials continue it
        storage = ctx.stage_dir / f"study-{_tag(search_cfg.fingerprint(space) | {'scores': scores})}.db"
        with Progress(disable=not ctx.progress, transient=True) as bar:
            task = bar.add_task(f"search ({search_cfg.method})", total=search_cfg.n_trials)

            def on_trial(done: Any) -> None:
                bar.update(task, completed=done.number + 1)
                est = ", ".join(f"{k} {v:.4g}" for k, v in done.metrics.items() if k != "accuracy")
                ctx.log(f"search: trial {done.number}: supernet accuracy {100 * done.metrics['accuracy']:.1f}%"
                        f"{'' if done.feasible else ' (over budget)'}; {est}")

            return S.run_search(space, objective, search_cfg, estimate=estimate, storage=storage, on_trial=on_trial)

    @staticmethod
    def _retrain(ctx: StageContext, model_spec: ArchSpec) -> dict[str, Any]:
        r = ctx.recipe
        params = {k: v for k, v in model_spec.as_kwargs().items() if k not in ("num_classes", "input_shape")}
        job = TrainJobConfig(data=r.data, model=ModelConfig(model_spec.family, params), train=r.train)
        run_dir = ctx.stage_dir / f"{model_spec.family}-{_tag(to_dict(job))}"
        job = dataclasses.replace(job, run_dir=str(run_dir))
        ctx.log(f"search: retraining {model_spec} from scratch in {run_dir.relative_to(ctx.run_dir)}")
        m = run_train_job(job, progress=ctx.progress, echo=None)
        ctx.log(f"search: retrained: val accuracy {100 * (m['val_accuracy'] or 0):.2f}%, "
                f"test accuracy {100 * m['test_accuracy']:.2f}%")
        keep = ("test_accuracy", "val_accuracy", "train_seconds", "data_source", "params", "macs", "history")
        return {k: m[k] for k in keep} | {"spec": m["spec"], "run_dir": str(run_dir.relative_to(ctx.run_dir))}

    @staticmethod
    def _choose(ctx: StageContext, retrain: dict[str, Any]) -> dict[str, Any]:
        """Keep the searched model unless the zoo's selection has the better validation accuracy."""
        zoo = ctx.records["zoo"].metrics
        zoo_row = next(c for c in zoo["candidates"] if c["name"] == zoo["selected"] and "train" in c)
        zoo_val, search_val = zoo_row["train"].get("val_accuracy") or 0.0, retrain["val_accuracy"] or 0.0
        comparison = {"zoo": {"name": zoo["selected"], "val_accuracy": zoo_val, "test_accuracy": zoo["test_accuracy"]},
                      "search": {"val_accuracy": search_val, "test_accuracy": retrain["test_accuracy"]}}
        if search_val > zoo_val:
            ctx.log(f"search: keeping the searched model (val {100 * search_val:.2f}% > zoo {zoo['selected']} "
                    f"{100 * zoo_val:.2f}%)")
            return {"selected": "search", "selected_spec": retrain["spec"], "selected_run_dir": retrain["run_dir"],
                    "test_accuracy": retrain["test_accuracy"], "val_accuracy": search_val,
                    "data_source": retrain["data_source"], "comparison": comparison}
        ctx.log(f"search: keeping the zoo model {zoo['selected']} (val {100 * zoo_val:.2f}% >= searched "
                f"{100 * search_val:.2f}%)")
        return {"selected": zoo["selected"], "selected_spec": zoo["selected_spec"],
                "selected_run_dir": zoo["selected_run_dir"], "test_accuracy": zoo["test_accuracy"],
                "val_accuracy": zoo_val, "data_source": zoo["data_source"], "comparison": comparison}
