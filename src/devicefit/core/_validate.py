"""Boundary checks whose errors name the parameter, the expectation and the value."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from ._errors import ConfigError

__all__ = ["check_choice", "check_int", "check_positive", "check_range"]


def check_positive(name: str, value: Any, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        rel = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be {rel}, got {value!r}")


def check_int(name: str, value: Any, low: int = 0) -> None:
    """An int (not a bool) >= `low`."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"{name} must be an int >= {low}, got {value!r}")


def check_range(name: str, value: Any, low: float, high: float, *, inclusive: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    inside = ok and (low <= value <= high if inclusive else low < value < high)
    if not inside:
        b = ("[", "]") if inclusive else ("(", ")")
        raise ConfigError(f"{name} must be in {b[0]}{low}, {high}{b[1]}, got {value!r}")


def check_choice(name: str, value: Any, choices: Collection[Any]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
