"""`--config FILE` then `--set key=value` overrides, shared by the commands that take a config."""

from __future__ import annotations

import argparse
from typing import Any, TypeVar

from devicefit.core import apply_overrides, from_dict, load_config_file

__all__ = ["add_config_args", "resolve_config"]

C = TypeVar("C")


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML or JSON config file")
    parser.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
                        help="override one config key (dotted, e.g. train.epochs=5); repeatable")


def resolve_config(cls: type[C], args: argparse.Namespace, extra: list[str] | None = None) -> C:
    """Defaults ← file ← `extra` (from dedicated flags) ← `--set`; unknown keys raise ConfigError."""
    data: dict[str, Any] = load_config_file(args.config) if args.config else {}
    data = apply_overrides(data, [*(extra or []), *args.overrides])
    return from_dict(cls, data)
