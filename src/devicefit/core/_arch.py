"""`ArchSpec`: a network as data — typed, hashable, JSON round-trippable.

A spec names a registered family (a zoo model or a search space) and its
hyper-parameters. Lists are frozen into tuples so specs hash and compare by value;
`spec_id` is a stable short hash of the canonical JSON, used for caching and run names.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._errors import ConfigError

__all__ = ["ArchSpec"]

_SCALARS = (str, int, float, bool, type(None))


def _freeze(value: Any, key: str) -> Any:
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, list | tuple):
        return tuple(_freeze(v, f"{key}[{i}]") for i, v in enumerate(value))
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(v, f"{key}.{k}")) for k, v in value.items()))
    raise ConfigError(f"ArchSpec parameter {key!r} must be a JSON scalar or list, got {type(value).__name__}")


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class ArchSpec:
    """A network architecture: `family` (registry name) plus hyper-parameters.

    Construct with a plain dict: ``ArchSpec("resnet8", {"num_classes": 10})``.
    Parameters are stored sorted and frozen; read them with `spec["key"]` or `get`.
    """

    family: str
    params: tuple[tuple[str, Any], ...] = field(default=())

    def __init__(self, family: str, params: Mapping[str, Any] | tuple[tuple[str, Any], ...] = ()) -> None:
        if not isinstance(family, str) or not family:
            raise ConfigError(f"ArchSpec family must be a non-empty string, got {family!r}")
        items = params.items() if isinstance(params, Mapping) else params
        frozen = tuple(sorted((str(k), _freeze(v, str(k))) for k, v in items))
        object.__setattr__(self, "family", family)
        object.__setattr__(self, "params", frozen)

    def __getitem__(self, key: str) -> Any:
        for k, v in self.params:
            if k == key:
                return v
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def as_kwargs(self) -> dict[str, Any]:
        """Parameters as a dict with tuples kept (for builders)."""
        return dict(self.params)

    def replace(self, **changes: Any) -> ArchSpec:
        """A copy with some parameters changed or added."""
        return ArchSpec(self.family, {**self.as_kwargs(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "params": {k: _thaw(v) for k, v in self.params}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ArchSpec:
        if not isinstance(data, Mapping) or "family" not in data:
            raise ConfigError(f"ArchSpec dict needs a 'family' key, got {data!r}")
        extra = set(data) - {"family", "params"}
        if extra:
            raise ConfigError(f"ArchSpec dict has unknown key(s) {sorted(extra)}; expected family, params")
        params = data.get("params", {})
        if not isinstance(params, Mapping):
            raise ConfigError(f"ArchSpec params must be a dict, got {type(params).__name__}")
        return cls(data["family"], params)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise ConfigError(f"ArchSpec JSON is not valid: {e}") from None

    @property
    def spec_id(self) -> str:
        """First 12 hex digits of the SHA-256 of the canonical JSON."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12]

    def __str__(self) -> str:
        inner = ", ".join(f"{k}={_thaw(v)}" for k, v in self.params)
        return f"{self.family}({inner})"
