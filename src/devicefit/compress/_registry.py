"""The compression registries: quantizers, pruning importance criteria and pruners, each extended by one decorator."""

from __future__ import annotations

from typing import Any

from devicefit.core import Registry

__all__ = ["IMPORTANCES", "PRUNERS", "QUANTIZERS", "list_importances", "list_pruners", "list_quantizers"]

QUANTIZERS: Registry[Any] = Registry("quantizer")
IMPORTANCES: Registry[Any] = Registry("pruning importance")
PRUNERS: Registry[Any] = Registry("pruner")


def list_quantizers() -> list[str]:
    """Names of the registered quantizers."""
    return QUANTIZERS.names()


def list_importances() -> list[str]:
    """Names of the registered channel-importance criteria."""
    return IMPORTANCES.names()


def list_pruners() -> list[str]:
    """Names of the registered pruners."""
    return PRUNERS.names()
