"""Optuna study storage: URL resolution (SQLite file by default, any SQLAlchemy URL such as PostgreSQL, or
in memory) and opening a study with a clear error when the store is corrupt or belongs to another search."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from devicefit.core import ConfigError, DataError

__all__ = ["open_study", "storage_url"]

CONFIG_ATTR = "devicefit_search"


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:  # pragma: no cover - optuna is a core dependency
        raise ConfigError("devicefit.search needs optuna; pip install optuna") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def storage_url(storage: str | os.PathLike[str] | None) -> str | None:
    """None (in memory), a database URL as given (`sqlite:///study.db`, `postgresql://...`), or a file path
    turned into `sqlite:///<absolute path>` (its folder is created)."""
    if storage is None:
        return None
    text = os.fspath(storage)
    if "://" in text:
        return text
    path = Path(text).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _check_sqlite_file(url: str) -> None:
    """A SQLite store that exists but is not a SQLite database would otherwise fail deep inside SQLAlchemy."""
    if not url.startswith("sqlite:///"):
        return
    path = Path(url[len("sqlite:///"):])
    if path.is_file() and path.stat().st_size > 0:
        with path.open("rb") as f:
            if f.read(16) != b"SQLite format 3\x00":
                raise DataError(f"study store {path} is not a SQLite database (corrupt or another file); "
                                f"move it away or give another storage")


def open_study(storage: str | os.PathLike[str] | None, study_name: str, fingerprint: dict[str, Any]) -> Any:
    """Create or load the optuna study `study_name` (direction maximize).

    `fingerprint` (JSON-ready) describes the search (space, method, metric, constraints, seed); a stored study
    with another fingerprint raises ConfigError naming both, so two different searches never mix.
    A store that cannot be opened raises DataError naming it.
    """
    optuna = _optuna()
    url = storage_url(storage)
    if url is None:
        study = optuna.create_study(study_name=study_name, direction="maximize")
    else:
        _check_sqlite_file(url)
        try:
            study = optuna.create_study(storage=url, study_name=study_name, direction="maximize",
                                        load_if_exists=True)
        except Exception as e:  # SQLAlchemy / optuna raise many types for a broken store
            raise DataError(f"study store {url} cannot be opened ({type(e).__name__}: {e}); "
                            f"it may be corrupt or of another optuna version") from None
    stored = study.user_attrs.get(CONFIG_ATTR)
    want = json.loads(json.dumps(fingerprint))
    if stored is None:
        study.set_user_attr(CONFIG_ATTR, want)
    elif stored != want:
        raise ConfigError(f"study {study_name!r} in {url} holds another search: stored {stored}, requested "
                          f"{want}; use another study name or storage")
    return study
