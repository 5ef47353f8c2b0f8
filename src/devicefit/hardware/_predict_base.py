"""The latency-predictor contract (`LatencyPredictor`), its registry and the JSON file format.

A predictor maps table-space specs (NB201 / FBNet cells) to latency in ms. Files are JSON (arrays as
lists, LightGBM models as their text format, large lookups in a sibling .npz); never pickles.
"""

from __future__ import annotations

import inspect
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from devicefit.core import (
    ArchSpec,
    ConfigError,
    DataError,
    NotFittedError,
    Registry,
    atomic_open,
    atomic_write_json,
    read_json,
    sha256_file,
)

from ._encoding import CellEncoding, get_encoding

__all__ = ["FORMAT_VERSION", "PREDICTORS", "LatencyPredictor", "list_predictors", "load_predictor",
           "register_predictor"]

FORMAT_VERSION = 1
PREDICTORS: Registry[type[LatencyPredictor]] = Registry("latency predictor")
P = TypeVar("P", bound="type[LatencyPredictor]")


def register_predictor(name: str) -> Any:
    """Class decorator: register a `LatencyPredictor` subclass as `name` (its `kind` in files)."""

    def deco(cls: P) -> P:
        cls.kind = name
        PREDICTORS.add(name, cls)
        return cls

    return deco


def list_predictors() -> list[str]:
    return PREDICTORS.names()


class LatencyPredictor:
    """Base class: predicts the latency (ms) of table-space specs.

    Contract (estimator style): `__init__` only stores hyper-parameters; `fit(specs, latencies_ms)`
    learns state in attributes ending in `_` and returns self; `predict(specs)` returns (N,) float64 ms,
    > 0, and raises NotFittedError before `fit`; every spec given to `fit` or `predict` must be of one
    family (the encoding is taken from the fitted specs; another family raises ConfigError).
    `save(path)` writes JSON atomically; `load_predictor(path)` rebuilds the right class.
    Subclasses implement `_fit(enc, idx, y_ms)`, `_predict(enc, idx)` on (N, positions) op indices,
    and `_get_state()` / `_set_state(state, arrays)`.
    """

    kind: ClassVar[str] = ""
    min_samples: ClassVar[int] = 2

    # -- public API -------------------------------------------------------------------------------

    def fit(self, specs: Sequence[ArchSpec], latencies_ms: Any) -> LatencyPredictor:
        enc = _encoding_of(specs, "specs")
        y = _check_latencies(latencies_ms, len(specs), self.min_samples, self.kind)
        self._fit(enc, enc.indices(list(specs)), y)
        self.family_ = enc.family
        return self

    def predict(self, specs: Sequence[ArchSpec]) -> np.ndarray:
        enc = self.encoding_
        if len(specs) == 0:
            return np.zeros(0)
        got = _encoding_of(specs, "specs")
        if got.family != enc.family:
            raise ConfigError(f"{self.kind} predictor was fitted on {enc.family!r} specs, "
                              f"cannot predict {got.family!r} specs")
        return np.asarray(self._predict(enc, enc.indices(list(specs))), dtype=np.float64)

    @property
    def encoding_(self) -> CellEncoding:
        if not hasattr(self, "family_"):
            raise NotFittedError(f"{type(self).__name__} ({self.kind!r}) is not fitted; call fit(specs, "
                                 f"latencies_ms) or load_predictor(path) first")
        return get_encoding(self.family_)

    def get_params(self) -> dict[str, Any]:
        """Hyper-parameters: the `__init__` arguments, read back from attributes of the same name."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {n: getattr(self, n) for n in names}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the fitted predictor as JSON (plus `<stem>.npz` when it holds arrays), atomically."""
        enc = self.encoding_
        state, arrays = self._get_state()
        doc: dict[str, Any] = {
            "kind": self.kind, "family": enc.family, "encoding_version": enc.version,
            "format_version": FORMAT_VERSION, "params": self._json_params(), "state": state,
        }
        path = Path(path)
        if arrays:
            doc["arrays"] = _save_arrays(path.with_suffix(".npz"), arrays)
        return atomic_write_json(path, doc)

    @classmethod
    def load(cls, path: str | os.PathLike[str], family: str | None = None) -> LatencyPredictor:
        obj = load_predictor(path, family)
        if not isinstance(obj, cls):
            raise ConfigError(f"{path}: holds a {obj.kind!r} predictor, not {cls.kind!r}")
        return obj

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._json_params().items())
        return f"{type(self).__name__}({params})"

    # -- subclass hooks ---------------------------------------------------------------------------

    def _fit(self, enc: CellEncoding, idx: np.ndarray, y_ms: np.ndarray) -> None:
        raise NotImplementedError

    def _predict(self, enc: CellEncoding, idx: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-ready learned state, arrays for the sibling .npz or {})."""
        raise NotImplementedError

    def _set_state(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def _json_params(self) -> dict[str, Any]:
        return self.get_params()


def load_predictor(path: str | os.PathLike[str], family: str | None = None) -> LatencyPredictor:
    """Rebuild a saved predictor (class from its `kind`). ConfigError when the file's format or
    encoding version differs from this devicefit's, or when `family` is given and differs."""
    path = Path(path)
    doc = read_json(path)
    if not isinstance(doc, dict) or "kind" not in doc:
        raise ConfigError(f"{path}: not a devicefit latency-predictor file (no 'kind')")
    if doc.get("format_version") != FORMAT_VERSION:
        raise ConfigError(f"{path}: predictor format_version {doc.get('format_version')!r} is not supported "
                          f"(this devicefit reads {FORMAT_VERSION}); refit and save it again")
    enc = get_encoding(str(doc.get("family")))
    if family is not None and family != enc.family:
        raise ConfigError(f"{path}: predictor is for the {enc.family!r} space, expected {family!r}")
    if doc.get("encoding_version") != enc.version:
        raise ConfigError(f"{path}: predictor was saved with {enc.family} encoding_version "
                          f"{doc.get('encoding_version')!r}, this devicefit has {enc.version}; refit it")
    cls = PREDICTORS.get(str(doc["kind"]))
    try:
        obj = cls(**doc.get("params", {}))
        arrays = _load_arrays(path, doc["arrays"]) if "arrays" in doc else {}
        obj._set_state(doc["state"], arrays)
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, ConfigError | DataError):
            raise
        raise ConfigError(f"{path}: malformed {doc['kind']!r} predictor file ({type(e).__name__}: {e})") from None
    obj.family_ = enc.family
    return obj


def _save_arrays(npz: Path, arrays: dict[str, np.ndarray]) -> dict[str, str]:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    with atomic_open(npz, "wb") as f:
        f.write(buf.getvalue())
    return {"file": npz.name, "sha256": sha256_file(npz)}


def _load_arrays(path: Path, ref: dict[str, str]) -> dict[str, np.ndarray]:
    npz = path.parent / ref["file"]
    if not npz.is_file():
        raise DataError(f"{path}: its arrays file {npz} is missing")
    if sha256_file(npz) != ref["sha256"]:
        raise DataError(f"{path}: arrays file {npz} does not match the sha256 recorded in the JSON "
                        "(saved by another run?); save the predictor again")
    with np.load(npz, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _encoding_of(specs: Sequence[ArchSpec], name: str) -> CellEncoding:
    if len(specs) == 0:
        raise ConfigError(f"{name} must not be empty")
    families = {s.family if isinstance(s, ArchSpec) else type(s).__name__ for s in specs}
    if len(families) != 1:
        raise ConfigError(f"{name} mix families {sorted(families)}; give specs of one table space")
    return get_encoding(families.pop())


def _check_latencies(latencies_ms: Any, n_specs: int, min_samples: int, kind: str) -> np.ndarray:
    y = np.asarray(latencies_ms, dtype=np.float64).ravel()
    if len(y) != n_specs:
        raise ConfigError(f"latencies_ms has {len(y)} values for {n_specs} specs")
    if n_specs < min_samples:
        raise ConfigError(f"{kind} predictor needs at least {min_samples} samples, got {n_specs}")
    bad = np.flatnonzero(~(np.isfinite(y) & (y > 0)))
    if len(bad):
        raise ConfigError(f"latencies_ms must be finite and > 0, got {y[bad[0]]!r} at position {bad[0]}")
    return y
