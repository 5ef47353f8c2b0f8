"""The supernet search job behind `devicefit search --space mbconv --method hsconas|evolution|random`: a
hardware-aware search of a weight-sharing space under a latency budget measured on a host target.

Steps (work folder `work_dir`; each resumes where a killed run stopped):
1. latency model: `latency_samples` architectures of the space (its smallest and largest among them) timed on
   `target`, one JSON line each, and a non-negative fit of latency on MACs and parameters
   (`_search_cost.build_cost_model`); a budget below the smallest network's estimate → `BudgetError` naming it;
2. the supernet, trained for `supernet_epochs` by uniform single-path sampling or the sandwich rule
   (`path_sampling`; checkpointed);
3. the search (Optuna ask/tell, SQLite study `storage`): each candidate is scored by the validation accuracy of
   its supernet path after BatchNorm re-estimation, candidates estimated over the budget are screened out;
4. HSCoNAS dynamic channel scaling (`channel_scaling`): the winner's stage widths are widened, best supernet
   accuracy first, while the estimate stays within the budget;
5. verification: the chosen network is extracted with its shared weights (`model.pt`, `spec.json`,
   `model.onnx`), BatchNorm re-estimated, scored on the test split, and timed on the target (median over
   `verify_sessions` fresh runtime sessions) next to the latency model's prediction;
6. with `retrain_epochs` > 0, the chosen network is trained from scratch (the supernet's recipe, checkpointed
   in `<model dir>/retrain`) and its test accuracy reported: the accuracy that counts. With `retrain_top` K > 1
   the K best feasible candidates by supernet accuracy (the channel-scaled winner first) are all trained so, and
   the one with the best *validation* accuracy after training becomes the chosen network (steps 5 and 6 then
   describe it; `chosen.searched_spec` and `chosen.channel_scaling` stay those of the search's winner); all of
   them are listed under `retrain.finalists`. The test split plays no part in the choice.
The record (`out`, atomic) holds the config, the latency model with its leave-one-out error, every evaluated
candidate (with its analytic int8 peak SRAM, `peak_sram_bytes`: the largest set of live activations, what a
microcontroller's arena must hold), the Pareto fronts of supernet accuracy against estimated latency and
against peak SRAM (`pareto`, trial numbers per cost), the channel-scaling steps and the verification.
Retrain the chosen network from scratch (or fine-tune it) to report its real accuracy: supernet-path accuracy
ranks candidates, it is not the accuracy of the trained network.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devicefit.core import (
    ArchSpec,
    BudgetError,
    ConfigError,
    atomic_write_json,
    check_int,
    check_positive,
    machine_info,
    to_dict,
)

from ._search_data import retrain_from_scratch, search_splits

__all__ = ["SUPERNET_METHODS", "SupernetSearchJobConfig", "default_options", "run_supernet_search_job"]

Log = Callable[[str], None]
SUPERNET_METHODS = ("hsconas", "evolution", "random")


SRAM = "peak_sram_bytes"  # analytic int8 peak activation memory of a candidate


@dataclass(frozen=True)
class SupernetSearchJobConfig:
    """One search. latency_ms: the budget on `target` (a host target); method: hsconas, evolution or random
    with `options` (merged over `default_options(method, n_trials)`); n_trials: evaluated candidates;
    supernet_epochs/batch_size/lr: supernet training on `data` (`n_train` images, 0 = all; `val_fraction` held
    out for scoring); path_sampling/n_random: how a supernet step picks its paths (`train.PATH_SAMPLINGS`:
    "uniform", or "sandwich" = largest + smallest + `n_random` uniform paths with in-place distillation);
    latency_samples/latency_repeats: the latency model's measured architectures and timed
    runs each; bn_batches: BatchNorm re-estimation batches per scored path; channel_scaling: HSCoNAS scaling
    of the winner (`scaling_max_drop`: stop widening when the proxy falls by more than this, keeping the
    best-scoring widths; None: spend the budget); verify_sessions: fresh sessions timing the chosen network;
    retrain_epochs: training from scratch (0: none); retrain_top: candidates trained from scratch, the best by
    validation accuracy chosen (1: the search's winner only; > 1 needs retrain_epochs); storage/study_name: the
    Optuna study (None: `<out>.db`, a name derived from the settings)."""

    latency_ms: float = 0.0
    work_dir: str = ""
    space: str = "mbconv"
    method: str = "hsconas"
    target: str = "host-ort"
    data: str = "cifar10"
    data_dir: str | None = None
    n_train: int = 0
    val_fraction: float = 0.1
    supernet_epochs: int = 2
    batch_size: int = 128
    lr: float = 0.05
    path_sampling: str = "uniform"
    n_random: int = 1
    n_trials: int = 100
    options: Mapping[str, Any] = field(default_factory=dict)
    latency_samples: int = 16
    latency_repeats: int = 30
    bn_batches: int = 4
    channel_scaling: bool = True
    scaling_max_drop: float | None = None
    verify_sessions: int = 3
    retrain_epochs: int = 0
    retrain_top: int = 1
    threads: int = 1
    seed: int = 0
    storage: str | None = None
    study_name: str | None = None

    def __post_init__(self) -> None:
        check_positive("latency_ms", self.latency_ms)
        check_positive("lr", self.lr)
        if not self.work_dir:
            raise ConfigError("work_dir must name a folder for the latency samples, supernet and network")
        if self.method not in SUPERNET_METHODS:
            raise ConfigError(f"method must be one of {', '.join(SUPERNET_METHODS)} for a supernet space (lightnas "
                              f"has its own job), got {self.method!r}")
        for name in ("supernet_epochs", "batch_size", "n_trials", "bn_batches", "verify_sessions", "threads"):
            check_int(name, getattr(self, name), 1)
        check_int("n_random", self.n_random, 1)
        from devicefit.train import PATH_SAMPLINGS  # torch only once a job is configured

        if self.path_sampling not in PATH_SAMPLINGS:
            raise ConfigError(f"path_sampling must be one of {', '.join(PATH_SAMPLINGS.names())}, "
                              f"got {self.path_sampling!r}")
        check_int("latency_samples", self.latency_samples, 4)
        check_int("latency_repeats", self.latency_repeats, 3)
        check_int("n_train", self.n_train)
        check_int("retrain_epochs", self.retrain_epochs)
        check_int("retrain_top", self.retrain_top, 1)
        if self.retrain_top > 1 and not self.retrain_epochs:
            raise ConfigError(f"retrain_top {self.retrain_top} picks among networks trained from scratch: set "
                              "retrain_epochs > 0 as well")
        if self.scaling_max_drop is not None and not self.scaling_max_drop >= 0:
            raise ConfigError(f"scaling_max_drop must be >= 0 or None, got {self.scaling_max_drop!r}")
        check_int("seed", self.seed)
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")
        object.__setattr__(self, "options", dict(self.options))


def default_options(method: str, n_trials: int) -> dict[str, Any]:
    """Strategy options sized to the trial budget: a fifth of it seeds the population (at least 4)."""
    init = max(4, n_trials // 5)
    if method == "hsconas":  # stages of a fifth of the budget; shrink the space between them
        return {"init": init, "parents": max(2, init // 2), "elite": max(2, init // 2),
                "stage_trials": max(4, n_trials // 5)}
    if method == "evolution":
        return {"population": init, "sample_size": max(1, init // 4)}
    return {}


def _sampling_std(accuracy: float, n: int) -> float:
    """Binomial standard deviation of an accuracy measured on `n` independent images: candidates whose proxies
    differ by less than about twice this are not told apart by the validation split."""
    return (accuracy * (1.0 - accuracy) / n) ** 0.5


def _runners_up(history: Any, chosen: ArchSpec, searched: ArchSpec, n: int) -> list[ArchSpec]:
    """The `n` best feasible evaluated candidates by supernet accuracy, other than the searched winner and its
    channel-scaled `chosen` (distinct specs; fewer when the search found fewer)."""
    seen, out = {chosen.to_json(), searched.to_json()}, []
    for h in sorted((h for h in history if h.feasible), key=lambda h: -h.metrics["accuracy"]):
        if len(out) < n and h.spec.to_json() not in seen:
            seen.add(h.spec.to_json())
            out.append(h.spec)
    return out


def run_supernet_search_job(cfg: SupernetSearchJobConfig, out: str | Path, *, log: Log | None = None,
                            on_trial: Callable[[Any], None] | None = None, progress: bool = False
                            ) -> dict[str, Any]:
    """Run (or resume) the job of the module docstring; returns the record also written to `out`."""
    import torch
    from rich.progress import Progress

    from devicefit import data as D
    from devicefit import search as S
    from devicefit import train as T
    from devicefit.hardware import get_target
    from devicefit.nn import export_onnx
    from devicefit.space import get_space

    from ._search_cost import build_cost_model, measure_model_latency
    from ._stage_search import _SubnetScorer, _tag

    say: Log = log or (lambda _m: None)
    out, work = Path(out), Path(cfg.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    space = get_space(cfg.space)
    if not callable(getattr(space, "supernet", None)):
        raise ConfigError(f"space {cfg.space!r} has no weight-sharing supernet; table spaces (nb201) are searched "
                          "by lookup: devicefit search --space nb201 --target nb201-<device>")
    target = get_target(cfg.target)
    if target.kind != "host":
        raise ConfigError(f"target {cfg.target!r} is a {target.kind} target; a supernet search measures latency "
                          "on a host target (devicefit targets ls --kind host)")
    torch.set_num_threads(cfg.threads)
    shape = tuple(space.input_shape)
    train, val, classes = search_splits(cfg.data, cfg.data_dir, space=cfg.space, input_shape=shape,
                                        val_fraction=cfg.val_fraction, n_train=cfg.n_train,
                                        batch_size=cfg.batch_size, seed=cfg.seed)
    test = D.load_dataset(cfg.data, "test", cfg.data_dir)

    # 1. latency model and the budget's feasibility
    costs = build_cost_model(space, [target.with_budgets(latency_ms=cfg.latency_ms)], "fp32", work,
                             n_latency=cfg.latency_samples, latency_margin=1.0, num_classes=classes,
                             input_shape=shape, repeats=cfg.latency_repeats, seed=cfg.seed, log=say)
    lm, (cname, limit) = costs.latency_models[0], next(iter(costs.limits.items()))
    smallest_ms = costs.estimate(space.smallest())[cname]
    if limit < smallest_ms:
        measured = next(s["latency_ms"] for s in lm.samples if s["spec"] == space.smallest().to_dict())
        raise BudgetError(f"latency_ms {cfg.latency_ms:g} is below the smallest network of {cfg.space} on "
                          f"{cfg.target}: {smallest_ms:.4g} ms by the latency model ({measured:.4g} ms measured); "
                          "raise latency_ms")
    loo = lm.to_dict()["loo_median_abs_rel_error"]
    say(f"latency model on {cfg.target}: {len(lm.samples)} networks, leave-one-out median error {100 * loo:.1f}%; "
        f"smallest network {smallest_ms:.3g} ms")

    # 2. supernet
    tcfg = T.TrainConfig(epochs=cfg.supernet_epochs, batch_size=cfg.batch_size, lr=cfg.lr, threads=cfg.threads,
                         seed=cfg.seed)
    sampling = {} if cfg.path_sampling == "uniform" else {"path_sampling": cfg.path_sampling, "n_random": cfg.n_random}
    sup_tag = _tag({"space": cfg.space, "train": to_dict(tcfg), "data": cfg.data, "n_train": cfg.n_train,
                    "val_fraction": cfg.val_fraction, "n": len(train), **sampling})
    torch.manual_seed(cfg.seed)
    supernet = space.supernet(num_classes=classes, input_shape=shape)
    sup_dir = work / f"supernet-{sup_tag}"
    say(f"supernet: {cfg.supernet_epochs} epoch(s) of {T.PATH_SAMPLINGS.get(cfg.path_sampling).describe} "
        f"training on {len(train)} images ({sup_dir.name})")
    T.fit_supernet(supernet, train, tcfg, run_dir=sup_dir, progress=progress, log=say, seed_paths=cfg.seed,
                   augment_default=D.DATASETS.get(cfg.data).augment, path_sampling=cfg.path_sampling,
                   n_random=cfg.n_random)
    score = _SubnetScorer(supernet, train, val, bn_batches=cfg.bn_batches, batch_size=cfg.batch_size,
                          path=sup_dir / f"scores-bn{cfg.bn_batches}-seed{cfg.seed}.jsonl", seed=cfg.seed)

    # 3. search
    options = default_options(cfg.method, cfg.n_trials) | dict(cfg.options)
    scfg = S.SearchConfig(method=cfg.method, n_trials=cfg.n_trials, seed=cfg.seed, metric="accuracy",
                          options=options, constraints=(S.Constraint(cname, limit, lower_bound=smallest_ms),))
    storage = cfg.storage if cfg.storage is not None else str(out.with_suffix(".db"))
    name = cfg.study_name or f"{cfg.space}-{cfg.target}-{cfg.method}-{cfg.latency_ms:g}ms-s{cfg.seed}-{sup_tag}"

    def objective(spec: ArchSpec) -> dict[str, float]:
        sram = float(costs.analytic(spec)["peak_activation_bytes_int8"])
        return {"accuracy": score(spec), **costs.estimate(spec), SRAM: sram}

    def trial_done(done: Any) -> None:
        bar.update(task, completed=done.number + 1)
        m = done.metrics
        say(f"trial {done.number + 1}/{cfg.n_trials}: supernet accuracy {100 * m['accuracy']:.1f}%, "
            f"{m[cname]:.3g} ms{'' if done.feasible else ' (over budget)'}")
        if on_trial is not None:
            on_trial(done)

    t0 = time.perf_counter()
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"search ({cfg.method})", total=cfg.n_trials)
        result = S.run_search(space, objective, scfg, estimate=costs.estimate, storage=storage, study_name=name,
                              on_trial=trial_done)
    search_s = time.perf_counter() - t0
    if result.best is None:
        raise BudgetError(f"none of the {len(result.history)} candidates was estimated within latency_ms "
                          f"{cfg.latency_ms:g} on {cfg.target}; raise latency_ms or n_trials")

    # 4. channel scaling
    chosen, scaling = result.best.spec, []
    if cfg.channel_scaling:
        chosen, scaling = S.scale_channels(space, chosen, lambda s: costs.estimate(s)[cname], limit, score=score,
                                           max_score_drop=cfg.scaling_max_drop)
        say(f"channel scaling: widths {list(result.best.spec['widths'])} -> {list(chosen['widths'])}, supernet "
            f"accuracy {100 * score(result.best.spec):.1f}% -> {100 * score(chosen):.1f}%")

    # 6 (before 5 when several finalists train: the choice decides which network is verified)
    retrain = None
    if cfg.retrain_epochs:
        rcfg = dataclasses.replace(tcfg, epochs=cfg.retrain_epochs)
        finalists = [chosen, *_runners_up(result.history, chosen, result.best.spec, cfg.retrain_top - 1)]
        runs = []
        for i, spec in enumerate(finalists):
            run_dir = work / f"searched-{spec.spec_id[:8]}" / "retrain"
            if len(finalists) > 1:
                say(f"finalist {i + 1}/{len(finalists)}: supernet accuracy {100 * score(spec):.1f}%")
            run = retrain_from_scratch(space, spec, cfg.data, (train, val, test), classes, rcfg, run_dir, log=say,
                                       progress=progress)
            runs.append(run | {"run_dir": str(run_dir), "spec": spec.to_dict(),
                               "supernet_val_accuracy": score(spec)})
        pick = max(range(len(runs)), key=lambda i: (runs[i]["val_accuracy"], -i))  # ties: the better proxy
        chosen, retrain = finalists[pick], dict(runs[pick]) | {"finalist": pick}
        if len(runs) > 1:
            retrain["finalists"] = runs
            say(f"chose finalist {pick + 1} of {len(runs)} by validation accuracy after training "
                f"({100 * runs[pick]['val_accuracy']:.1f}%)")

    # 5. the chosen network: files, test accuracy with the shared weights, measured latency
    net = T.recalibrate_bn_(supernet.extract(chosen), train, batches=cfg.bn_batches, batch_size=cfg.batch_size,
                            seed=cfg.seed).eval()
    model_dir = work / f"searched-{chosen.spec_id[:8]}"
    model_dir.mkdir(parents=True, exist_ok=True)
    T.save_weights(net, model_dir / "model.pt")
    atomic_write_json(model_dir / "spec.json", chosen.to_dict())
    export_onnx(net, shape, model_dir / "model.onnx")
    lat = measure_model_latency(model_dir / "model.onnx", target, "fp32", input_shape=shape,  # the file as shipped
                                repeats=cfg.latency_repeats, sessions=cfg.verify_sessions, seed=cfg.seed)
    predicted = costs.estimate(chosen)[cname]
    test_acc = float(T.evaluate(net, test, batch_size=64)["accuracy"])
    noise = _sampling_std(score(chosen), len(val))
    say(f"chosen: predicted {predicted:.4g} ms, measured {lat.median_ms:.4g} ms for a {cfg.latency_ms:g} ms budget; "
        f"supernet-weight accuracy val {100 * score(chosen):.1f}% (± {100 * noise:.1f} points sampling noise on "
        f"{len(val)} images), test {100 * test_acc:.1f}%; network in "
        f"{model_dir}")
    record = {
        "kind": "supernet-search", "config": to_dict(cfg) | {"options": options},
        "storage": storage, "study_name": name, "search_s": search_s,
        "latency_model": lm.to_dict(), "constraints": costs.describe, "smallest_ms": smallest_ms,
        "chosen": {"spec": chosen.to_dict(), "searched_spec": result.best.spec.to_dict(),
                   "selected_by": ("supernet accuracy" if retrain is None or "finalists" not in retrain else
                                   f"validation accuracy after training: finalist {retrain['finalist'] + 1} of "
                                   f"{len(retrain['finalists'])} (1 = the search's channel-scaled winner)"),
                   "channel_scaling": scaling, "predicted_ms": predicted, "measured_ms": lat.median_ms,
                   "measured_over_budget": lat.median_ms / cfg.latency_ms,
                   "measurement": lat.measurement.to_dict(),
                   "supernet_val_accuracy": score(chosen), "supernet_test_accuracy": test_acc,
                   "supernet_val_accuracy_sampling_std": noise,
                   "val_images": len(val),
                   "model_dir": str(model_dir),
                   "note": "accuracies use the supernet's shared weights (BatchNorm re-estimated): they rank "
                           "candidates, within the sampling noise of the validation split "
                           "(`supernet_val_accuracy_sampling_std`); `retrain` holds the accuracy of the network "
                           "trained from scratch"},
        "retrain": retrain,
        "machine": machine_info(), **result.to_dict(),
    }
    # the front against peak SRAM too (not a constraint here: a host target has no SRAM budget)
    record["pareto"] = {**record["pareto"],
                        SRAM: [h.number for h in S.pareto_front(result.history, "accuracy", (SRAM,))]}
    atomic_write_json(out, record)
    return record

