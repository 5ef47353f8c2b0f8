"""The error hierarchy: every failure a user can cause is a `DevicefitError` subclass.

Messages name the parameter, file or op, say what was expected and what came.
"""

from __future__ import annotations

__all__ = [
    "BudgetError",
    "ConfigError",
    "DataError",
    "DevicefitError",
    "DownloadError",
    "NotFittedError",
    "UnsupportedOpError",
]


class DevicefitError(Exception):
    """Base class of every error devicefit raises on purpose."""


class ConfigError(DevicefitError, ValueError):
    """A configuration value, key, name or type is not acceptable."""


class DataError(DevicefitError, ValueError):
    """A dataset, file or array is missing, corrupt or of the wrong shape."""


class DownloadError(DataError):
    """A download failed, was offline, or did not match its checksum."""


class UnsupportedOpError(DevicefitError, NotImplementedError):
    """A model contains an op or layer that a backend or method cannot handle."""


class BudgetError(DevicefitError, ValueError):
    """A budget is infeasible or was not met."""


class NotFittedError(DevicefitError, RuntimeError):
    """A stateful transform was used before `fit`/`calibrate`."""
