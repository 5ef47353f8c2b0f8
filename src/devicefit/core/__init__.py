"""Core types, registry, errors, validation, configuration and atomic I/O (no torch)."""

from ._arch import ArchSpec
from ._config import apply_overrides, from_dict, load_config_file, to_dict
from ._errors import (
    BudgetError,
    ConfigError,
    DataError,
    DevicefitError,
    DownloadError,
    NotFittedError,
    UnsupportedOpError,
)
from ._io import (
    atomic_open,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    read_json,
    read_jsonl,
    sha256_file,
)
from ._machine import machine_info
from ._records import RECORD_VERSION, Measurement, RunRecord
from ._registry import Registry
from ._validate import check_choice, check_int, check_positive, check_range

__all__ = [
    "RECORD_VERSION",
    "ArchSpec",
    "BudgetError",
    "ConfigError",
    "DataError",
    "DevicefitError",
    "DownloadError",
    "Measurement",
    "NotFittedError",
    "Registry",
    "RunRecord",
    "UnsupportedOpError",
    "apply_overrides",
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_choice",
    "check_int",
    "check_positive",
    "check_range",
    "from_dict",
    "load_config_file",
    "machine_info",
    "read_json",
    "read_jsonl",
    "sha256_file",
    "to_dict",
]
