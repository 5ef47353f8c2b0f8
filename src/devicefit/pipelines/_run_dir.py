"""Run directories: one folder per job holding its resolved config, log, records and artefacts.

A run directory is claimed by writing `config.json`; reusing it with a different config
is refused (never a silent overwrite), reusing it with the same config resumes.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devicefit import __version__
from devicefit.core import ConfigError, DataError, atomic_write_json, read_json

__all__ = ["claim_run_dir", "open_run_log", "run_log"]

_CONFIG = "config.json"


def claim_run_dir(run_dir: Path, kind: str, config: dict[str, Any]) -> bool:
    """Create or reuse `run_dir` for a `kind` job with `config`; True if it held this config already.

    Raises ConfigError naming the differing keys when the folder holds another job.
    """
    path = run_dir / _CONFIG
    stamp = {"kind": kind, "devicefit_version": __version__, "config": config}
    if path.exists():
        try:
            old = read_json(path)
        except DataError as e:
            raise ConfigError(f"run directory {run_dir} has an unreadable {_CONFIG} ({e}); "
                              "choose another --run-dir") from None
        if old.get("kind") != kind or old.get("config") != config:
            diff = _diff_keys(old.get("config", {}), config) or ["kind"]
            raise ConfigError(f"run directory {run_dir} holds a different {old.get('kind')!r} run "
                              f"(differs in: {', '.join(diff[:8])}); choose another --run-dir or delete it")
        return True
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, stamp)
    return False


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def open_run_log(run_dir: Path) -> logging.Logger:
    """A logger appending to `<run_dir>/log.txt`, one per folder (a child of `devicefit.run`), so a job
    that runs another job inside it (a recipe training a model) keeps both logs apart."""
    target = str((run_dir / "log.txt").resolve())
    digest = hashlib.sha256(target.encode()).hexdigest()[:12]
    logger = logging.getLogger(f"devicefit.run.{digest}")
    logger.setLevel(logging.INFO)
    if not any(isinstance(h, logging.FileHandler) and h.baseFilename == target for h in logger.handlers):
        handler = logging.FileHandler(target, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
    return logger


def run_log(run_dir: Path, echo: Callable[[str], None] | None = None) -> Callable[..., None]:
    """A `log(fmt, *args)` that writes %-formatted lines to `<run_dir>/log.txt` and, when given, to `echo`."""
    logger = open_run_log(run_dir)

    def log(fmt: str, *args: Any) -> None:
        logger.info(fmt, *args)
        if echo is not None:
            echo(fmt % args)

    return log
