"""Recipes for `devicefit run`: which data, which device(s) and budgets, and which stages, as typed data.

A recipe is a TOML file read into `Recipe` (unknown keys and wrong types are rejected with the key's
dotted name before any work starts); every field is documented on its dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devicefit.core import ConfigError, check_positive, from_dict, load_config_file
from devicefit.train import PATH_SAMPLINGS, TrainConfig

from ._train_job import DataConfig

__all__ = ["CandidateConfig", "CompressConfig", "DeployConfig", "Recipe", "SearchStageConfig", "ZooConfig",
           "load_recipe"]


@dataclass(frozen=True)
class CandidateConfig:
    """A zoo model to consider: registry `name` and builder `params` (e.g. `width_mult`)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ZooConfig:
    """The baseline stage. Every candidate is costed (int8 weights/activations) and checked against the
    memory budgets, its fp32 latency is measured on each host target, and the `train_top` feasible
    candidates with the most MACs (the most capacity that fits) are trained with the recipe's `train`."""

    candidates: tuple[CandidateConfig, ...] = (
        CandidateConfig("resnet8"),
        CandidateConfig("mobilenet_v2", {"width_mult": 0.35}),
        CandidateConfig("dscnn"),
    )
    train_top: int = 1
    latency_repeats: int = 30

    def __post_init__(self) -> None:
        if not self.candidates:
            raise ConfigError("zoo.candidates: expected at least one zoo model, got none")
        check_positive("zoo.train_top", self.train_top)
        check_positive("zoo.latency_repeats", self.latency_repeats)


@dataclass(frozen=True)
class SearchStageConfig:
    """The search stage: a hardware-aware search of `space` (a registered space whose nets are zoo models,
    e.g. "resnet_cifar") by `method` ("hsconas", "evolution" or "random", with `options`), for the
    architecture with the best validation accuracy that meets every budget of the recipe.

    A weight-sharing supernet is trained for `supernet_epochs` (`path_sampling`: "uniform" single-path, or
    "sandwich" = the largest, the smallest and `n_random` uniform paths per step; the recipe's `train`
    settings otherwise), starting from the zoo model's trained weights when that network is a member
    of the space (`warm_start`) and distilling from it (`distill`); each of the `trials` candidates is scored
    by the accuracy of its path on the validation split, after re-estimating BatchNorm statistics on
    `bn_batches` training batches.
    Memory budgets are screened with the space's analytic int8 cost; each host latency budget with a
    latency model fitted to `latency_samples` architectures measured on that target at the deployed
    precision, searched against `latency_margin` × the budget (headroom for measurement noise).
    `channel_scaling` then widens the winner's stages while the estimates stay within budget (HSCoNAS).
    The chosen architecture is retrained from scratch with the recipe's `train`, exactly like the zoo
    models, and the model with the better validation accuracy (search or zoo) goes on to compress.
    """

    space: str = "resnet_cifar"
    method: str = "hsconas"
    options: dict[str, Any] = field(default_factory=lambda: {"init": 12, "stage_trials": 10, "elite": 6,
                                                             "parents": 6, "min_size": 200})
    trials: int = 40
    supernet_epochs: int = 6
    path_sampling: str = "uniform"
    n_random: int = 1
    bn_batches: int = 4
    latency_samples: int = 16
    latency_margin: float = 0.85
    channel_scaling: bool = True
    warm_start: bool = True
    distill: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("trials", "supernet_epochs", "bn_batches", "latency_samples", "n_random"):
            check_positive(f"search.{key}", getattr(self, key))
        if self.path_sampling not in PATH_SAMPLINGS:
            raise ConfigError(f"search.path_sampling must be one of {', '.join(PATH_SAMPLINGS.names())}, "
                              f"got {self.path_sampling!r}")
        if self.latency_samples < 4:
            raise ConfigError(f"search.latency_samples must be >= 4 (a 3-term latency model is fitted), "
                              f"got {self.latency_samples}")
        if not 0.0 < self.latency_margin <= 1.0:
            raise ConfigError(f"search.latency_margin must be in (0, 1], got {self.latency_margin!r}")


@dataclass(frozen=True)
class CompressConfig:
    """The compress stage: `quantize` = "int8" (post-training, per-channel weights) or "none"."""

    quantize: str = "int8"
    calibration_samples: int = 512

    def __post_init__(self) -> None:
        if self.quantize not in ("int8", "none"):
            raise ConfigError(f"compress.quantize must be 'int8' or 'none', got {self.quantize!r}")
        check_positive("compress.calibration_samples", self.calibration_samples)


@dataclass(frozen=True)
class DeployConfig:
    """The deploy stage: generate int8 C for each microcontroller target (`mcu`), link it against the
    target's budgets, verify it bit-exact with the integer reference on `verify_samples` test inputs on
    the host (ASan+UBSan) and on up to 4 of them under QEMU (`qemu`)."""

    mcu: bool = True
    qemu: bool = True
    verify_samples: int = 64

    def __post_init__(self) -> None:
        check_positive("deploy.verify_samples", self.verify_samples)


@dataclass(frozen=True)
class Recipe:
    """One end-to-end job.

    `targets`: device names (`devicefit targets ls`); `budgets`: per-target overrides or additions,
    e.g. `{"host-ort": {"latency_ms": 2.0}}` (sizes accept "256KiB"). `stages` run in order; each
    writes `stages/<name>.json` in `run_dir` and is skipped when its config and inputs are unchanged.
    """

    name: str = "recipe"
    run_dir: str | None = None
    targets: tuple[str, ...] = ("cortex-m4-256k", "host-ort")
    budgets: dict[str, dict[str, Any]] = field(default_factory=dict)
    stages: tuple[str, ...] = ("zoo", "search", "compress", "deploy", "verify", "report")
    data: DataConfig = field(default_factory=DataConfig)
    zoo: ZooConfig = field(default_factory=ZooConfig)
    search: SearchStageConfig = field(default_factory=SearchStageConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    compress: CompressConfig = field(default_factory=CompressConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)

    def __post_init__(self) -> None:
        if not self.targets:
            raise ConfigError("targets: expected at least one target name, got none")
        unknown = sorted(set(self.budgets) - set(self.targets))
        if unknown:
            raise ConfigError(f"budgets: {', '.join(map(repr, unknown))} not in targets {list(self.targets)}")
        if len(set(self.stages)) != len(self.stages):
            raise ConfigError(f"stages: each stage at most once, got {list(self.stages)}")

    def default_run_dir(self) -> Path:
        return Path(self.run_dir or f"runs/{self.name}")


def load_recipe(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """A validated `Recipe` from a TOML file (None: the defaults) with `key=value` overrides applied;
    unknown keys, wrong types, unknown targets or impossible budgets raise `ConfigError` naming the key."""
    from devicefit import hardware as H

    from ._run_job import STAGES

    raw: dict[str, Any] = load_config_file(path) if path is not None else {}
    from devicefit.core import apply_overrides

    raw = apply_overrides(raw, list(overrides))
    recipe = from_dict(Recipe, raw)
    for name in recipe.stages:
        STAGES.get(name)  # unknown stage → ConfigError listing the known ones
    if "search" in recipe.stages:
        from devicefit import search as S
        from devicefit import space as SP

        space = SP.get_space(recipe.search.space)  # unknown space → ConfigError with the known ones
        if not hasattr(space, "model_spec") or not hasattr(space, "supernet"):
            raise ConfigError(f"search.space {recipe.search.space!r} has no zoo-model builder and supernet; "
                              "the pipeline needs one whose nets the later stages can rebuild, e.g. 'resnet_cifar'")
        S.SearchConfig(method=recipe.search.method, options=recipe.search.options).strategy(space)
    for t in recipe.targets:
        target = H.get_target(t)  # unknown target → ConfigError with the closest names
        target.with_budgets(**recipe.budgets.get(t, {}))  # bad budget key/value → ConfigError
    return recipe


def recipe_targets(recipe: Recipe) -> list[Any]:
    """The recipe's targets with its budget overrides applied."""
    from devicefit import hardware as H

    return [H.get_target(t).with_budgets(**recipe.budgets.get(t, {})) for t in recipe.targets]
