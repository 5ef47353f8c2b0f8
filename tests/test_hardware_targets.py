"""Targets as data: built-in declarations, TOML validation errors, the registry and budget checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from devicefit.core import BudgetError, ConfigError, Measurement, Registry
from devicefit.hardware import _target
from devicefit.hardware._target import (
    BUDGET_NAMES,
    TARGETS,
    Target,
    check_budgets,
    get_target,
    list_targets,
    load_targets_dir,
    load_targets_file,
    parse_size_bytes,
)

KiB, MiB = 1024, 1024 * 1024


@pytest.mark.parametrize("name", TARGETS.names())
def test_every_builtin_target_validates_and_round_trips(name: str) -> None:
    t = get_target(name)
    assert t.name == name
    assert Target.from_mapping(t.to_dict()) == t
    assert t.description


def test_builtin_kinds_and_memory_budgets() -> None:
    assert {t.name for t in list_targets("host")} == {"host-ort", "host-torch"}
    assert get_target("host-ort").precisions == ("fp32", "int8")
    m4 = get_target("cortex-m4-256k")
    assert (m4.peak_sram_bytes, m4.flash_bytes, m4.qemu_machine) == (256 * KiB, 1 * MiB, "mps2-an386")
    m7, m55 = get_target("cortex-m7-512k"), get_target("cortex-m55-512k")
    assert (m7.peak_sram_bytes, m7.flash_bytes, m7.qemu_machine) == (512 * KiB, 2 * MiB, "mps2-an500")
    assert (m55.peak_sram_bytes, m55.flash_bytes, m55.qemu_machine) == (512 * KiB, 2 * MiB, "mps3-an547")


def test_table_targets_one_per_latency_column() -> None:
    tables = list_targets("table")
    assert len([t for t in tables if t.space == "nb201"]) == 25
    assert len([t for t in tables if t.space == "fbnet"]) == 27
    pixel2, raspi4 = get_target("nb201-pixel2"), get_target("fbnet-raspi4")
    assert (pixel2.table, pixel2.column, pixel2.batch_size, pixel2.measured) == ("nb201_latency_help.csv", "pixel2", 1,
                                                                                 True)
    assert raspi4.table == "fbnet_latency_help.csv"
    assert all(t.measured is False for t in tables if t.column in ("eyeriss", "fpga"))
    assert all(t.measured is True for t in tables if t.column not in ("eyeriss", "fpga"))
    assert get_target("nb201-gold-6226").batch_size is None  # the source does not state it
    assert get_target("fbnet-titanxp-64").batch_size == 64


def test_unknown_target_lists_close_matches() -> None:
    with pytest.raises(ConfigError, match=r"unknown target 'cortex-m4'.*cortex-m4-256k"):
        get_target("cortex-m4")
    with pytest.raises(ConfigError, match="kind"):
        list_targets("gpu")


@pytest.mark.parametrize(("value", "expected"), [(1000, 1000), ("256KiB", 256 * KiB), ("1 MiB", MiB),
                                                 ("2MB", 2_000_000), ("1.5KiB", 1536), ("512", 512)])
def test_parse_size_bytes(value: object, expected: int) -> None:
    assert parse_size_bytes("flash_bytes", value) == expected


@pytest.mark.parametrize("value", ["256K", "lots", -1, 0, True, "0.3B", 1.5])
def test_parse_size_bytes_rejects(value: object) -> None:
    with pytest.raises(ConfigError, match="flash_bytes"):
        parse_size_bytes("flash_bytes", value)


def _write(tmp_path: Path, text: str, name: str = "mine.toml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


_BOARD = """
[[target]]
name = "{name}"
kind = "mcu"
runtime = "c"
precisions = ["int8"]
peak_sram_bytes = "{sram}"
cpu = "cortex-m4"
clock_hz = 64_000_000
{extra}
"""


def test_user_file_registers_all_targets(tmp_path: Path) -> None:
    reg: Registry[Target] = Registry("target")
    p = _write(tmp_path, _BOARD.format(name="nrf52840", sram="256KiB", extra="") +
               _BOARD.format(name="tiny", sram="64KiB", extra='flash_bytes = "256KiB"'))
    loaded = load_targets_file(p, registry=reg)
    assert [t.name for t in loaded] == ["nrf52840", "tiny"]
    assert reg.get("tiny").flash_bytes == 256 * KiB and reg.get("nrf52840").peak_sram_bytes == 256 * KiB


@pytest.mark.parametrize(("extra", "sram", "key"), [
    ("colour = 'red'", "256KiB", "colour"),
    ("", "256 kilobytes", "peak_sram_bytes"),
    ("column = 'pixel2'", "256KiB", "column"),
    ("latency_ms = -3", "256KiB", "latency_ms"),
])
def test_toml_errors_name_file_and_key(tmp_path: Path, extra: str, sram: str, key: str) -> None:
    p = _write(tmp_path, _BOARD.format(name="bad-board", sram=sram, extra=extra))
    with pytest.raises(ConfigError) as e:
        load_targets_file(p, registry=Registry("target"))
    assert str(p) in str(e.value) and key in str(e.value) and "bad-board" in str(e.value)


def test_duplicate_names_rejected_and_nothing_registered(tmp_path: Path) -> None:
    reg: Registry[Target] = Registry("target")
    twice = _write(tmp_path, _BOARD.format(name="a", sram="1KiB", extra="") * 2)
    with pytest.raises(ConfigError, match=r"mine\.toml.*'name'.*'a'"):
        load_targets_file(twice, registry=reg)
    assert len(reg) == 0
    clash = _write(tmp_path, _BOARD.format(name="new", sram="1KiB", extra="") +
                   _BOARD.format(name="host-ort", sram="1KiB", extra=""), "clash.toml")
    with pytest.raises(ConfigError, match=r"clash\.toml.*'name'.*'host-ort' is already registered"):
        load_targets_file(clash)
    assert "new" not in TARGETS  # all or none


def test_bad_toml_syntax_and_missing_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"broken\.toml.*cannot parse"):
        load_targets_file(_write(tmp_path, "[[target]\nname=", "broken.toml"), registry=Registry("target"))
    with pytest.raises(ConfigError, match=r"nokind\.toml.*'x'.*kind"):
        load_targets_file(_write(tmp_path, '[[target]]\nname = "x"\nruntime = "c"', "nokind.toml"),
                          registry=Registry("target"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_targets_file(tmp_path / "absent.toml", registry=Registry("target"))


def test_env_folder_is_registered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg: Registry[Target] = Registry("target")
    for name in TARGETS.names():
        reg.add(name, TARGETS.get(name))
    monkeypatch.setattr(_target, "TARGETS", reg)
    monkeypatch.setattr(_target, "_loaded_env", set())
    _write(tmp_path, _BOARD.format(name="env-board", sram="128KiB", extra=""), "env.toml")
    monkeypatch.setenv(_target.TARGETS_ENV, str(tmp_path))
    assert _target.get_target("env-board").peak_sram_bytes == 128 * KiB
    assert "env-board" in [t.name for t in _target.list_targets("mcu")]
    assert len(load_targets_dir(tmp_path, registry=Registry("target"))) == 1


def test_validation_on_construction() -> None:
    with pytest.raises(ConfigError, match="runtime"):
        Target("x", "host", "c")
    with pytest.raises(ConfigError, match="cpu applies only to mcu"):
        Target("x", "host", "onnxruntime", cpu="cortex-m4")
    with pytest.raises(ConfigError, match="clock_hz is required"):
        Target("x", "mcu", "c", cpu="cortex-m4")
    with pytest.raises(ConfigError, match="precisions"):
        Target("x", "host", "torch", precisions=("fp64",))
    with pytest.raises(ConfigError, match="peak_sram_bytes"):
        Target("x", "host", "torch", peak_sram_bytes=1.5)  # type: ignore[arg-type]


def test_with_budgets_returns_a_validated_copy() -> None:
    base = get_target("host-ort")
    t = base.with_budgets(latency_ms=2.5, model_bytes="1MiB")
    assert (t.latency_ms, t.model_bytes, base.latency_ms) == (2.5, MiB, None)
    assert t.budgets == {"latency_ms": 2.5, "model_bytes": MiB}
    with pytest.raises(ConfigError, match="unknown budget"):
        base.with_budgets(sram=3)
    with pytest.raises(ConfigError, match="latency_ms must be"):
        base.with_budgets(latency_ms=0)


def test_check_budgets_over_under_and_missing() -> None:
    t = get_target("cortex-m4-256k").with_budgets(latency_ms=10.0)
    r = check_budgets(t, {"peak_sram_bytes": 128 * KiB, "flash_bytes": 2 * MiB})
    by = {line.name: line for line in r.lines}
    assert set(by) == {"latency_ms", "peak_sram_bytes", "flash_bytes"}
    assert by["peak_sram_bytes"].met is True and by["peak_sram_bytes"].margin == pytest.approx(0.5)
    assert by["flash_bytes"].met is False and by["flash_bytes"].margin == pytest.approx(-1.0)
    assert by["flash_bytes"].status == "over"
    assert by["latency_ms"].met is None and by["latency_ms"].status == "not measured"
    assert not r.ok and r.over == ("flash_bytes",) and r.not_measured == ("latency_ms",)
    with pytest.raises(BudgetError, match=r"flash_bytes .*latency_ms not measured"):
        r.require()


def test_check_budgets_all_met_and_measurement_figures() -> None:
    t = get_target("host-ort").with_budgets(latency_ms=1.0)
    r = check_budgets(t, {"latency_ms": Measurement("latency", 0.25, "ms"), "flash_bytes": 5})
    assert r.ok and r.require() is r and r.lines[0].margin == pytest.approx(0.75)
    assert r.to_dict()["ok"] is True
    assert check_budgets("host-ort", {}).ok  # no budgets: nothing to fail
    with pytest.raises(ConfigError, match="unknown budget"):
        check_budgets(t, {"latency": 1.0})
    with pytest.raises(ConfigError, match="latency_ms"):
        check_budgets(t, {"latency_ms": "fast"})
    assert set(BUDGET_NAMES) == {"latency_ms", "peak_sram_bytes", "flash_bytes", "model_bytes"}
