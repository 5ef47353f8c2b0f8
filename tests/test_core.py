"""Core: ArchSpec, registry, typed configs and overrides, atomic I/O, run records."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Literal

import pytest

from devicefit.core import (
    ArchSpec,
    ConfigError,
    DataError,
    DevicefitError,
    Measurement,
    Registry,
    RunRecord,
    apply_overrides,
    atomic_open,
    atomic_write_json,
    check_choice,
    check_positive,
    check_range,
    from_dict,
    load_config_file,
    machine_info,
    read_json,
    sha256_file,
    to_dict,
)


def test_archspec_is_hashable_and_round_trips_json():
    a = ArchSpec("mobilenet_v2", {"width_mult": 0.35, "input_shape": [3, 32, 32], "num_classes": 10})
    b = ArchSpec("mobilenet_v2", {"num_classes": 10, "input_shape": (3, 32, 32), "width_mult": 0.35})
    assert a == b and hash(a) == hash(b) and a.spec_id == b.spec_id
    assert a["input_shape"] == (3, 32, 32)
    back = ArchSpec.from_json(a.to_json())
    assert back == a
    assert json.loads(a.to_json())["params"]["input_shape"] == [3, 32, 32]
    assert a.replace(width_mult=0.5) != a and a.replace(width_mult=0.5)["width_mult"] == 0.5
    assert {a: 1}[b] == 1


def test_archspec_rejects_bad_input():
    with pytest.raises(ConfigError, match="family"):
        ArchSpec("")
    with pytest.raises(ConfigError, match="weights"):
        ArchSpec("x", {"weights": object()})
    with pytest.raises(ConfigError, match="unknown key"):
        ArchSpec.from_dict({"family": "x", "params": {}, "extra": 1})
    with pytest.raises(ConfigError, match="not valid"):
        ArchSpec.from_json("{nope")


def test_registry_lists_and_names_choices_on_miss():
    reg: Registry[int] = Registry("widget")

    @reg.register("b")
    def _b() -> int:
        return 2

    reg.add("a", 1)
    assert reg.names() == ["a", "b"] and "a" in reg and len(reg) == 2
    with pytest.raises(ConfigError, match=r"unknown widget 'c'; known: a, b"):
        reg.get("c")
    with pytest.raises(ConfigError, match="already registered"):
        reg.add("a", 3)


@dataclass(frozen=True)
class _Inner:
    lr: float = 0.1
    kind: Literal["sgd", "adamw"] = "sgd"


@dataclass(frozen=True)
class _Outer:
    name: str = "x"
    sizes: tuple[int, ...] = (1, 2)
    inner: _Inner = field(default_factory=_Inner)
    note: str | None = None


def test_from_dict_builds_nested_and_coerces():
    cfg = from_dict(_Outer, {"name": "y", "sizes": [3, 4], "inner": {"lr": 1, "kind": "adamw"}})
    assert cfg == _Outer("y", (3, 4), _Inner(1.0, "adamw"))
    assert isinstance(cfg.inner.lr, float)
    assert to_dict(cfg) == {"name": "y", "sizes": [3, 4], "inner": {"lr": 1.0, "kind": "adamw"}, "note": None}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"nme": "y"}, r"unknown config key\(s\) nme"),
        ({"inner": {"lrr": 1}}, r"inner\.lrr"),
        ({"inner": {"lr": "fast"}}, r"inner\.lr: expected float"),
        ({"inner": {"kind": "adam"}}, r"inner\.kind: expected one of 'sgd', 'adamw'"),
        ({"sizes": [1, "two"]}, r"sizes\[1\]: expected int"),
        ({"name": True}, r"name: expected str"),
    ],
)
def test_from_dict_errors_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(_Outer, data)


def test_overrides_parse_toml_values_and_reject_unknown_keys_later():
    base = {"inner": {"lr": 0.1}}
    out = apply_overrides(base, ["inner.lr=0.5", "sizes=[8, 16]", "name=resnet8", "inner.kind=\"adamw\""])
    assert out == {"inner": {"lr": 0.5, "kind": "adamw"}, "sizes": [8, 16], "name": "resnet8"}
    assert base == {"inner": {"lr": 0.1}}  # input untouched
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(base, ["inner.lr"])
    with pytest.raises(ConfigError, match="is a value"):
        apply_overrides(base, ["inner.lr.x=1"])
    with pytest.raises(ConfigError, match=r"inner\.bogus"):
        from_dict(_Outer, apply_overrides(base, ["inner.bogus=1"]))


def test_load_config_file_toml_json_and_errors(tmp_path):
    (tmp_path / "c.toml").write_text('name = "z"\n[inner]\nlr = 0.2\n')
    (tmp_path / "c.json").write_text('{"name": "z"}')
    (tmp_path / "bad.toml").write_text("name = \n")
    assert load_config_file(tmp_path / "c.toml") == {"name": "z", "inner": {"lr": 0.2}}
    assert load_config_file(tmp_path / "c.json") == {"name": "z"}
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        load_config_file(tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_file(tmp_path / "missing.toml")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_open(target) as f:
        f.write(b"half")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]
    atomic_write_json(tmp_path / "sub" / "r.json", {"b": 1, "a": [1.5]})
    assert read_json(tmp_path / "sub" / "r.json") == {"a": [1.5], "b": 1}
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "nan.json", {"x": float("nan")})
    assert not (tmp_path / "nan.json").exists()


def test_read_json_names_the_file(tmp_path):
    (tmp_path / "x.json").write_text("{broken")
    with pytest.raises(DataError, match=r"x\.json"):
        read_json(tmp_path / "x.json")


def test_sha256_file(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    assert sha256_file(tmp_path / "f") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_checks_name_parameter():
    with pytest.raises(ConfigError, match=r"latency_ms must be > 0, got -3"):
        check_positive("latency_ms", -3)
    check_positive("n", 0, allow_zero=True)
    with pytest.raises(ConfigError, match=r"ratio must be in \(0, 1\), got 1"):
        check_range("ratio", 1, 0, 1)
    with pytest.raises(ConfigError, match="optimizer must be one of"):
        check_choice("optimizer", "adam", ("sgd", "adamw"))
    assert issubclass(ConfigError, DevicefitError)


def test_run_record_round_trip_and_version_check(tmp_path):
    m = Measurement("latency", 1.5, "ms", {"repeats": 10}, {"p10": 1.4, "p90": 1.6}, machine_info())
    rec = RunRecord("train", {"epochs": 1}, {"accuracy": 0.5, "latency": m.to_dict()}, {"model": "model.pt"})
    path = rec.save(tmp_path)
    loaded = RunRecord.load(path)
    assert loaded == rec
    assert Measurement.from_dict(loaded.metrics["latency"]) == m
    data = json.loads(path.read_text())
    data["version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="version 99"):
        RunRecord.load(path)


def test_machine_info_has_cpu_fields():
    info = machine_info()
    assert info["logical_cpus"] >= 1 and isinstance(info["cpu_flags"], list) and info["python"].startswith("3.")
