"""The model zoo registry: `register_model`, `build(spec)`, `default_spec`, `list_models` and `cost`.

A family is one builder function whose keyword parameters (all with defaults) are its hyper-parameters;
every builder takes `num_classes`, `input_shape` (C, H, W) and `width_mult`.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from devicefit.core import ArchSpec, ConfigError, Registry, check_choice, check_positive
from devicefit.nn import CostReport, analyze

__all__ = ["INPUT_KINDS", "MODELS", "ModelInfo", "build", "cost", "default_spec", "list_models", "register_model"]

INPUT_KINDS = ("image", "audio")
COMMON_PARAMS = ("num_classes", "input_shape", "width_mult")

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelInfo:
    """A registered family: its builder and the defaults of every hyper-parameter."""

    name: str
    description: str
    input_kind: str
    builder: Builder = field(repr=False, compare=False)
    defaults: Mapping[str, Any] = field(compare=False)

    def to_dict(self) -> dict[str, Any]:
        defaults = {k: list(v) if isinstance(v, tuple) else v for k, v in self.defaults.items()}
        return {"name": self.name, "description": self.description, "input_kind": self.input_kind,
                "defaults": defaults}


MODELS: Registry[ModelInfo] = Registry("model")


def _defaults_of(name: str, builder: Builder) -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    for p in inspect.signature(builder).parameters.values():
        if p.kind is not inspect.Parameter.KEYWORD_ONLY or p.default is inspect.Parameter.empty:
            raise ConfigError(f"model {name!r}: builder parameter {p.name!r} must be keyword-only with a default")
        defaults[p.name] = tuple(p.default) if isinstance(p.default, list) else p.default
    missing = [c for c in COMMON_PARAMS if c not in defaults]
    if missing:
        raise ConfigError(f"model {name!r}: builder lacks the common parameter(s) {missing}")
    return defaults


def register_model(name: str, *, description: str, input_kind: str) -> Callable[[Builder], Builder]:
    """Decorator registering a builder `f(*, num_classes, input_shape, width_mult, ...) -> nn.Module`."""
    check_choice("input_kind", input_kind, INPUT_KINDS)

    def deco(builder: Builder) -> Builder:
        defaults = types.MappingProxyType(_defaults_of(name, builder))  # read-only
        MODELS.add(name, ModelInfo(name, description, input_kind, builder, defaults))
        return builder

    return deco


def list_models() -> list[ModelInfo]:
    """Every registered family, sorted by name."""
    return [MODELS.get(n) for n in MODELS.names()]


def _check_input_shape(value: Any) -> tuple[int, int, int]:
    ok = isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 3
    if not ok or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in value):
        raise ConfigError(f"input_shape must be (C, H, W) with 3 positive ints, got {value!r}")
    return (value[0], value[1], value[2])


def _check_common(kw: dict[str, Any]) -> None:
    n = kw["num_classes"]
    if not isinstance(n, int) or isinstance(n, bool) or n < 2:
        raise ConfigError(f"num_classes must be an int >= 2, got {n!r}")
    check_positive("width_mult", kw["width_mult"])
    kw["input_shape"] = _check_input_shape(kw["input_shape"])


def _resolve(info: ModelInfo, params: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults overlaid with `params`; unknown keys and bad common values raise `ConfigError`."""
    unknown = sorted(set(params) - set(info.defaults))
    if unknown:
        raise ConfigError(f"model {info.name!r} has no parameter(s) {', '.join(map(repr, unknown))}; "
                          f"accepted: {', '.join(sorted(info.defaults))}")
    kw = {**info.defaults, **params}
    _check_common(kw)
    return kw


def build(spec: ArchSpec) -> nn.Module:
    """Build the network `spec` describes (missing parameters take the family's defaults).

    Raises `ConfigError` for an unknown family (listing the known ones), an unknown parameter (listing the
    accepted ones) or a bad value (naming the parameter).
    """
    if not isinstance(spec, ArchSpec):
        raise ConfigError(f"spec must be an ArchSpec, got {type(spec).__name__}")
    info = MODELS.get(spec.family)
    return info.builder(**_resolve(info, spec.as_kwargs()))


def default_spec(
    name: str, *, num_classes: int = 10, input_shape: Sequence[int] | None = None, **overrides: Any
) -> ArchSpec:
    """A complete spec of family `name` with every parameter explicit.

    `input_shape` None takes the family's default ((3, 32, 32) for images, (1, 49, 10) MFCCs for audio).
    """
    info = MODELS.get(name)
    given = {"num_classes": num_classes, **overrides}
    if input_shape is not None:
        given["input_shape"] = input_shape
    return ArchSpec(name, _resolve(info, given))


def cost(spec: ArchSpec, **kw: Any) -> CostReport:
    """`analyze(build(spec), input_shape)` with the spec's input shape; `kw` goes to `analyze`."""
    info = MODELS.get(spec.family)
    shape = _resolve(info, spec.as_kwargs())["input_shape"]
    return analyze(build(spec), shape, **kw)
