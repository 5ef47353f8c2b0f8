"""The `Space` contract over every registered search space: sampling, mutation, crossover, encoding, validation."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from devicefit.core import ArchSpec, ConfigError, UnsupportedOpError
from devicefit.space import MAX_ENUMERATE, SPACES, CellSpace, Space, get_space, list_spaces

NAMES = list_spaces()


def _ops(space: Space, spec: ArchSpec) -> tuple[Any, ...]:
    """A spec's positions: its ops (cell and MBConv spaces), else the positional `values(spec)` (resnet_cifar)."""
    ops = spec.get("ops")
    return tuple(ops) if ops is not None else tuple(space.values(spec))  # type: ignore[attr-defined]


def test_registry_lists_the_table_spaces() -> None:
    assert {"nb201", "fbnet"} <= set(NAMES)
    assert all(isinstance(get_space(n), Space) and get_space(n).name == n for n in NAMES)
    with pytest.raises(ConfigError, match=r"unknown search space 'nope'.*nb201"):
        get_space("nope")
    assert len(SPACES) == len(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_sample_is_valid_and_deterministic(name: str) -> None:
    space = get_space(name)
    a = [space.sample(np.random.default_rng(7)) for _ in range(2)]
    assert a[0] == a[1]
    rng = np.random.default_rng(0)
    specs = [space.sample(rng) for _ in range(50)]
    assert all(space.contains(s) and space.validate(s) == s and s.family == name for s in specs)
    assert len(set(specs)) > 40  # draws differ
    assert specs[0] == ArchSpec.from_json(specs[0].to_json())


@pytest.mark.parametrize("name", NAMES)
def test_sample_covers_every_op(name: str) -> None:
    space = get_space(name)
    if not isinstance(space, CellSpace):
        pytest.skip("cell-space specific; MBConv spaces are checked in tests/test_space_mbconv.py")
    rng = np.random.default_rng(1)
    seen = {op for _ in range(100) for op in space.sample(rng)["ops"]}
    assert seen == set(space.encoding.ops)


@pytest.mark.parametrize("name", NAMES)
def test_mutate_changes_at_least_one_position_and_stays_valid(name: str) -> None:
    space = get_space(name)
    rng = np.random.default_rng(2)
    for _ in range(30):
        parent = space.sample(rng)
        child = space.mutate(parent, rng)
        assert space.contains(child) and child != parent
    parent = space.sample(np.random.default_rng(3))
    again = [space.mutate(parent, np.random.default_rng(4), prob=0.3) for _ in range(2)]
    assert again[0] == again[1]
    everywhere = space.mutate(parent, np.random.default_rng(5), prob=1.0)
    assert all(x != y for x, y in zip(_ops(space, parent), _ops(space, everywhere), strict=True))
    nowhere = space.mutate(parent, np.random.default_rng(5), prob=0.0)  # still one forced change
    assert sum(x != y for x, y in zip(_ops(space, parent), _ops(space, nowhere), strict=True)) == 1


@pytest.mark.parametrize("name", NAMES)
def test_mutate_rejects_a_bad_probability(name: str) -> None:
    space = get_space(name)
    spec = space.sample(np.random.default_rng(0))
    with pytest.raises(ConfigError, match=r"prob must be in \[0.0, 1.0\], got 1.5"):
        space.mutate(spec, np.random.default_rng(0), prob=1.5)
    with pytest.raises(ConfigError, match=r"rng must be a numpy\.random\.Generator"):
        space.mutate(spec, 3)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", NAMES)
def test_crossover_takes_each_position_from_a_parent(name: str) -> None:
    space = get_space(name)
    rng = np.random.default_rng(6)
    a, b = space.sample(rng), space.sample(rng)
    children = [space.crossover(a, b, np.random.default_rng(8)) for _ in range(2)]
    assert children[0] == children[1] and space.contains(children[0])
    for _ in range(20):
        child = space.crossover(a, b, rng)
        assert all(c in (x, y) for c, x, y in zip(_ops(space, child), _ops(space, a), _ops(space, b), strict=True))
    assert space.crossover(a, a, rng) == a


@pytest.mark.parametrize("name", NAMES)
def test_encode_is_one_hot(name: str) -> None:
    space = get_space(name)
    if not isinstance(space, CellSpace):
        pytest.skip("cell-space specific; MBConv spaces are checked in tests/test_space_mbconv.py")
    enc = space.encoding
    rng = np.random.default_rng(9)
    specs = [space.sample(rng) for _ in range(5)]
    x = space.encode(specs)
    assert x.shape == (5, enc.n_positions * len(enc.ops)) and x.dtype == np.float32
    assert np.array_equal(x.sum(axis=1), np.full(5, enc.n_positions))
    assert np.array_equal(space.encode(specs[0]), x[:1])
    blocks = x[0].reshape(enc.n_positions, len(enc.ops)).argmax(axis=1)
    assert tuple(enc.ops[i] for i in blocks) == specs[0]["ops"]


@pytest.mark.parametrize("name", NAMES)
def test_validate_names_family_position_and_op(name: str) -> None:
    space = get_space(name)
    if not isinstance(space, CellSpace):
        pytest.skip("cell-space specific; MBConv spaces are checked in tests/test_space_mbconv.py")
    ops = list(space.sample(np.random.default_rng(10))["ops"])
    pos = space.encoding.position_names[2]
    ops[2] = "conv_7x7"
    bad = ArchSpec(name, {"ops": ops})
    with pytest.raises(ConfigError, match=rf"{name}: op 'conv_7x7' at {pos} is not one of"):
        space.validate(bad)
    with pytest.raises(ConfigError, match=rf"{name}: expected {space.encoding.n_positions} ops, got 2"):
        space.validate(ArchSpec(name, {"ops": ops[:2]}))
    with pytest.raises(ConfigError, match=rf"expected a '{name}' spec, got family 'resnet8'"):
        space.validate(ArchSpec("resnet8", {"ops": ops}))
    with pytest.raises(ConfigError, match=r"unexpected parameter\(s\) \['C'\]"):
        space.validate(ArchSpec(name, {"ops": space.sample(np.random.default_rng(0))["ops"], "C": 8}))
    with pytest.raises(ConfigError, match="spec must be an ArchSpec"):
        space.validate("nb201")  # type: ignore[arg-type]
    assert not any(space.contains(s) for s in (bad, ArchSpec(name, {}), ArchSpec("resnet8"), None, "x"))


@pytest.mark.parametrize("name", NAMES)
def test_size_and_enumerate(name: str) -> None:
    space = get_space(name)
    if not isinstance(space, CellSpace):
        pytest.skip("cell-space specific; MBConv spaces are checked in tests/test_space_mbconv.py")
    assert space.size == len(space.encoding.ops) ** space.encoding.n_positions
    if space.size > MAX_ENUMERATE:
        with pytest.raises(UnsupportedOpError, match="sample"):
            next(space.enumerate())
    else:
        first = next(space.enumerate())
        assert space.contains(first) and first == space.encoding.spec([space.encoding.ops[0]] * len(first["ops"]))
