"""Device targets as data: the `Target` record, its TOML declarations and the `TARGETS` registry.

Built-in targets live in `hardware/targets/*.toml`; users add files with `load_targets_file` or a folder
named by the `DEVICEFIT_TARGETS` environment variable. `check_budgets` compares measured figures with them.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devicefit.core import BudgetError, ConfigError, Registry

__all__ = [
    "BUDGET_NAMES",
    "TARGETS",
    "TARGETS_ENV",
    "BudgetLine",
    "BudgetReport",
    "Target",
    "check_budgets",
    "get_target",
    "list_targets",
    "load_targets_dir",
    "load_targets_file",
    "parse_size_bytes",
    "parse_targets_file",
]

TARGETS_ENV = "DEVICEFIT_TARGETS"
BUILTIN_DIR = Path(__file__).parent / "targets"
BUDGET_NAMES = ("latency_ms", "peak_sram_bytes", "flash_bytes", "model_bytes")
SIZE_BUDGETS = ("peak_sram_bytes", "flash_bytes", "model_bytes")
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int4")
SPACES = ("nb201", "fbnet", "ofa_mbv3")

# Which runtimes and which extra fields each kind of target has (data, not a switch).
KIND_RUNTIMES: dict[str, tuple[str, ...]] = {"host": ("onnxruntime", "torch"), "mcu": ("c",), "table": ("table",)}
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "host": (),
    "mcu": ("cpu", "qemu_machine", "clock_hz"),
    "table": ("table", "column", "space", "measured", "batch_size"),
}
KIND_REQUIRED: dict[str, tuple[str, ...]] = {
    "host": (), "mcu": ("cpu", "clock_hz"), "table": ("table", "column", "space"),
}

_SIZE_UNITS = {"b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "kb": 1000, "mb": 1000**2, "gb": 1000**3}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_size_bytes(key: str, value: Any) -> int:
    """A byte count from an int or a string like "256KiB", "1 MiB", "2MB" (KiB/MiB/GiB = 1024-based,
    kB/MB/GB = 1000-based, B or no unit = bytes); raises `ConfigError` naming `key`."""
    if isinstance(value, int) and not isinstance(value, bool):
        nbytes = value
    elif isinstance(value, str) and (m := _SIZE_RE.match(value)) and m.group(2).lower() in (*_SIZE_UNITS, ""):
        exact = float(m.group(1)) * _SIZE_UNITS[m.group(2).lower() or "b"]
        if exact != int(exact):
            raise ConfigError(f"{key}: {value!r} is not a whole number of bytes")
        nbytes = int(exact)
    else:
        raise ConfigError(f"{key}: expected bytes as an int or a string like '256KiB', '1MiB', '2MB', got {value!r}")
    if nbytes <= 0:
        raise ConfigError(f"{key} must be > 0 bytes, got {value!r}")
    return nbytes


@dataclass(frozen=True)
class Target:
    """A device, its runtime and precisions, and the budgets a model must meet on it.

    Budgets (None = no limit): `latency_ms` (batch-1 median), `peak_sram_bytes` (peak activation memory),
    `flash_bytes` (code + weights), `model_bytes` (model file). Kind-specific fields: mcu → `cpu`,
    `qemu_machine`, `clock_hz`; table → `table` (CSV file name), `column`, `space`, `measured`
    (False for simulated/estimated columns), `batch_size` (None where the source does not say).
    Validated on construction; errors name the field, what was expected and what came.
    """

    name: str
    kind: str
    runtime: str
    precisions: tuple[str, ...] = ("fp32",)
    description: str = ""
    latency_ms: float | None = None
    peak_sram_bytes: int | None = None
    flash_bytes: int | None = None
    model_bytes: int | None = None
    cpu: str | None = None
    qemu_machine: str | None = None
    clock_hz: int | None = None
    table: str | None = None
    column: str | None = None
    space: str | None = None
    measured: bool | None = None
    batch_size: int | None = None

    def __post_init__(self) -> None:
        _check_identity(self)
        _check_budgets(self)
        _check_kind_fields(self)

    @property
    def budgets(self) -> dict[str, float | int]:
        """The budgets this target sets (only those that are not None)."""
        return {k: getattr(self, k) for k in BUDGET_NAMES if getattr(self, k) is not None}

    def with_budgets(self, **budgets: float | int | str | None) -> Target:
        """A copy with some budgets replaced (sizes accept "256KiB"-style strings; None removes a budget)."""
        unknown = sorted(set(budgets) - set(BUDGET_NAMES))
        if unknown:
            raise ConfigError(f"unknown budget(s) {', '.join(unknown)}; known: {', '.join(BUDGET_NAMES)}")
        return dataclasses.replace(self, **_parse_budgets(budgets))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, leaving out kind-specific ones that are unset."""
        d = dataclasses.asdict(self)
        d["precisions"] = list(self.precisions)
        extra = {f for fields in KIND_FIELDS.values() for f in fields}
        return {k: v for k, v in d.items() if k not in extra or v is not None}

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> Target:
        """A target from a TOML/JSON table; unknown keys and bad values raise `ConfigError` naming the key."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown key(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}")
        d = dict(data)
        if isinstance(d.get("precisions"), list):
            d["precisions"] = tuple(d["precisions"])
        d.update(_parse_budgets({k: d[k] for k in BUDGET_NAMES if k in d}))
        return cls(**d)


def _parse_budgets(budgets: dict[str, Any]) -> dict[str, Any]:
    out = dict(budgets)
    for key in SIZE_BUDGETS:
        if out.get(key) is not None:
            out[key] = parse_size_bytes(key, out[key])
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check_identity(t: Target) -> None:
    if not isinstance(t.name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", t.name):
        raise ConfigError(f"name must be lower-case letters, digits, '.', '_' or '-', got {t.name!r}")
    if t.kind not in KIND_RUNTIMES:
        raise ConfigError(f"kind must be one of {', '.join(KIND_RUNTIMES)}, got {t.kind!r}")
    if t.runtime not in KIND_RUNTIMES[t.kind]:
        raise ConfigError(f"runtime of a {t.kind!r} target must be one of {', '.join(KIND_RUNTIMES[t.kind])}, "
                          f"got {t.runtime!r}")
    if not isinstance(t.precisions, tuple) or not t.precisions or any(p not in PRECISIONS for p in t.precisions):
        raise ConfigError(f"precisions must be a non-empty list of {', '.join(PRECISIONS)}, got {t.precisions!r}")
    if not isinstance(t.description, str):
        raise ConfigError(f"description must be a string, got {t.description!r}")


def _check_budgets(t: Target) -> None:
    if t.latency_ms is not None and (not _is_number(t.latency_ms) or not t.latency_ms > 0):
        raise ConfigError(f"latency_ms must be a number > 0, got {t.latency_ms!r}")
    for key in SIZE_BUDGETS:
        v = getattr(t, key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
            raise ConfigError(f"{key} must be an int > 0 (bytes), got {v!r}")


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "cpu": (str,), "qemu_machine": (str,), "clock_hz": (int,), "table": (str,), "column": (str,),
    "space": (str,), "measured": (bool,), "batch_size": (int,),
}


def _check_kind_fields(t: Target) -> None:
    allowed = KIND_FIELDS[t.kind]
    for key, types in _FIELD_TYPES.items():
        v = getattr(t, key)
        if v is None:
            if key in KIND_REQUIRED[t.kind]:
                raise ConfigError(f"{key} is required for a {t.kind!r} target")
            continue
        if key not in allowed:
            raise ConfigError(f"{key} applies only to {_kinds_with(key)} targets, not to kind {t.kind!r}")
        if not isinstance(v, types) or (bool not in types and isinstance(v, bool)):
            raise ConfigError(f"{key} must be {types[0].__name__}, got {v!r}")
        if isinstance(v, int) and not isinstance(v, bool) and v <= 0:
            raise ConfigError(f"{key} must be > 0, got {v!r}")
    if t.cpu is not None and not re.fullmatch(r"cortex-m\d+", t.cpu):
        raise ConfigError(f"cpu must look like 'cortex-m4', got {t.cpu!r}")
    if t.space is not None and t.space not in SPACES:
        raise ConfigError(f"space must be one of {', '.join(SPACES)}, got {t.space!r}")


def _kinds_with(key: str) -> str:
    return "/".join(kind for kind, fields in KIND_FIELDS.items() if key in fields)


# --- budget checks ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BudgetLine:
    """One budget: `status` is "met", "over" or "not measured" (then `value`, `met` and `margin` are None).
    `margin` = (limit - value) / limit: the fraction of the limit left, negative when over."""

    name: str
    limit: float | int
    value: float | int | None
    met: bool | None
    margin: float | None
    status: str


@dataclass(frozen=True)
class BudgetReport:
    """Every budget of `target` against the figures given; `ok` only when each budget was measured and met."""

    target: str
    lines: tuple[BudgetLine, ...]

    @property
    def ok(self) -> bool:
        return all(line.met is True for line in self.lines)

    @property
    def not_measured(self) -> tuple[str, ...]:
        return tuple(line.name for line in self.lines if line.met is None)

    @property
    def over(self) -> tuple[str, ...]:
        return tuple(line.name for line in self.lines if line.met is False)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "ok": self.ok, "lines": [dataclasses.asdict(x) for x in self.lines]}

    def require(self) -> BudgetReport:
        """Return self when `ok`; else raise `BudgetError` naming the budgets over or not measured."""
        if not self.ok:
            parts = [f"{x.name} {x.value} > {x.limit}" for x in self.lines if x.met is False]
            parts += [f"{n} not measured" for n in self.not_measured]
            raise BudgetError(f"target {self.target!r}: budgets not met: {'; '.join(parts)}")
        return self


def _figure_value(name: str, figure: Any) -> float | None:
    value = getattr(figure, "value", figure)  # a Measurement or a plain number
    if value is None:
        return None
    if not _is_number(value) or value != value or value < 0:
        raise ConfigError(f"figures[{name!r}] must be a number >= 0 or a Measurement, got {figure!r}")
    return float(value)


def _budget_line(name: str, limit: float | int, value: float | None) -> BudgetLine:
    if value is None:
        return BudgetLine(name, limit, None, None, None, "not measured")
    met = value <= limit
    return BudgetLine(name, limit, value, met, (limit - value) / limit, "met" if met else "over")


def check_budgets(target: str | Target, figures: dict[str, Any]) -> BudgetReport:
    """Compare `figures` (budget name → number or `Measurement`, in the budget's unit) with `target`'s budgets.

    A budget without a figure (or with None) is "not measured", never "met"; a figure for a budget the
    target does not set is ignored; a key that is not a budget name raises `ConfigError`.
    """
    t = get_target(target)
    unknown = sorted(set(figures) - set(BUDGET_NAMES))
    if unknown:
        raise ConfigError(f"figures: unknown budget(s) {', '.join(map(repr, unknown))}; "
                          f"known: {', '.join(BUDGET_NAMES)}")
    lines = tuple(_budget_line(k, lim, _figure_value(k, figures.get(k))) for k, lim in t.budgets.items())
    return BudgetReport(t.name, lines)


# --- declarations and the registry ------------------------------------------------------------------------

TARGETS: Registry[Target] = Registry("target")


def _read_toml(path: Path) -> list[Any]:
    if not path.is_file():
        raise ConfigError(f"targets file {path} does not exist")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot parse TOML ({e})") from None
    unknown = sorted(set(doc) - {"target"})
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {', '.join(map(repr, unknown))}; "
                          "expected [[target]] tables")
    entries = doc.get("target", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: 'target' must be an array of tables ([[target]]), got {type(entries).__name__}")
    return entries


def _parse_entry(path: Path, i: int, entry: Any) -> Target:
    label = f"{path}: target #{i + 1}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{label}: expected a table, got {entry!r}")
    if "name" in entry:
        label = f"{path}: target {entry['name']!r}"
    try:
        return Target.from_mapping(entry)
    except ConfigError as e:
        raise ConfigError(f"{label}: {e}") from None
    except TypeError as e:  # a required field missing from the table
        raise ConfigError(f"{label}: {e}") from None


def parse_targets_file(path: str | os.PathLike[str]) -> list[Target]:
    """Read and validate every `[[target]]` table of a TOML file without registering anything."""
    p = Path(path)
    targets = [_parse_entry(p, i, entry) for i, entry in enumerate(_read_toml(p))]
    seen: set[str] = set()
    for t in targets:
        if t.name in seen:
            raise ConfigError(f"{p}: key 'name': target {t.name!r} is declared twice in this file")
        seen.add(t.name)
    return targets


def load_targets_file(path: str | os.PathLike[str], *, registry: Registry[Target] | None = None) -> list[Target]:
    """Validate all targets of a TOML file, then register them (all or none) in `registry` (default `TARGETS`).

    A duplicate name (with this file or an already registered target) raises `ConfigError` naming file and key.
    """
    reg = TARGETS if registry is None else registry
    targets = parse_targets_file(path)
    for t in targets:
        if t.name in reg:
            raise ConfigError(f"{path}: key 'name': target {t.name!r} is already registered")
    for t in targets:
        reg.add(t.name, t)
    return targets


def load_targets_dir(folder: str | os.PathLike[str], *, registry: Registry[Target] | None = None) -> list[Target]:
    """Load every `*.toml` file of `folder` in name order (see `load_targets_file`)."""
    d = Path(folder)
    if not d.is_dir():
        raise ConfigError(f"targets folder {d} does not exist (from ${TARGETS_ENV} or the caller)")
    return [t for f in sorted(d.glob("*.toml")) for t in load_targets_file(f, registry=registry)]


_loaded_env: set[str] = set()


def _load_env_targets() -> None:
    """Register the targets of the folder named by $DEVICEFIT_TARGETS, once per folder."""
    folder = os.environ.get(TARGETS_ENV, "").strip()
    if folder and folder not in _loaded_env:
        load_targets_dir(folder)
        _loaded_env.add(folder)


def get_target(name: str | Target) -> Target:
    """The registered target `name` (a `Target` passes through); unknown → `ConfigError` with close matches."""
    if isinstance(name, Target):
        return name
    _load_env_targets()
    if not isinstance(name, str) or name not in TARGETS:
        close = difflib.get_close_matches(str(name), TARGETS.names(), n=5, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(TARGETS.names())}"
        raise ConfigError(f"unknown target {name!r}; {hint} (list them with `devicefit targets ls`)")
    return TARGETS.get(name)


def list_targets(kind: str | None = None) -> list[Target]:
    """Registered targets sorted by name, optionally only one `kind` ("host", "mcu" or "table")."""
    if kind is not None and kind not in KIND_RUNTIMES:
        raise ConfigError(f"kind must be one of {', '.join(KIND_RUNTIMES)} or None, got {kind!r}")
    _load_env_targets()
    targets = [TARGETS.get(n) for n in TARGETS.names()]
    return [t for t in targets if kind is None or t.kind == kind]


def _load_builtins() -> None:
    for f in sorted(BUILTIN_DIR.glob("*.toml")):
        load_targets_file(f)


_load_builtins()
