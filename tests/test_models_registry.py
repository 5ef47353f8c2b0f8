"""The zoo's public boundary: specs with defaults, listing, cost, and errors that name the parameter."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from devicefit.core import ArchSpec, ConfigError
from devicefit.models import MODELS, build, cost, default_spec, list_models, register_model
from devicefit.models.shufflenet_v2 import channel_shuffle, shuffle_indices
from devicefit.nn import analyze


def test_default_spec_is_complete() -> None:
    spec = default_spec("mobilenet_v2")
    assert spec.as_kwargs() == {"num_classes": 10, "input_shape": (3, 32, 32), "width_mult": 0.35,
                                "last_channels": None, "act": "relu6"}
    assert default_spec("dscnn")["input_shape"] == (1, 49, 10)  # the family's own default input
    spec = default_spec("resnet8", num_classes=12, input_shape=[1, 28, 28], width_mult=0.5)
    assert spec["num_classes"] == 12 and spec["input_shape"] == (1, 28, 28) and spec["width_mult"] == 0.5


def test_partial_spec_takes_defaults() -> None:
    model = build(ArchSpec("resnet8", {"num_classes": 3}))
    assert model.fc.out_features == 3 and model.features[0][0].in_channels == 3


def test_list_models() -> None:
    infos = list_models()
    assert [i.name for i in infos] == MODELS.names()
    for info in infos:
        assert info.description and info.input_kind in ("image", "audio")
        assert {"num_classes", "input_shape", "width_mult"} <= set(info.defaults)
        json.dumps(info.to_dict())


def test_cost_uses_the_spec_input_shape() -> None:
    spec = default_spec("resnet8", input_shape=(1, 28, 28))
    r = cost(spec, act_bits=16)
    assert r.input_shape == (1, 28, 28)
    assert r.to_dict() == analyze(build(spec), (1, 28, 28), act_bits=16).to_dict()


def test_unknown_family_lists_known() -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'resnet9'; known: dscnn, .*resnet8"):
        build(ArchSpec("resnet9", {}))
    with pytest.raises(ConfigError, match="resnet9"):
        default_spec("resnet9")


def test_unknown_parameter_names_it_and_the_accepted_ones() -> None:
    with pytest.raises(ConfigError, match=r"no parameter\(s\) 'depth'; accepted: act, input_shape, num_classes"):
        build(ArchSpec("resnet8", {"depth": 8}))
    with pytest.raises(ConfigError, match="'expansion'"):
        default_spec("mobilenet_v2", expansion=6)


@pytest.mark.parametrize(("family", "params", "match"), [
    ("resnet8", {"width_mult": 0}, "width_mult must be > 0, got 0"),
    ("resnet8", {"width_mult": -0.5}, "width_mult"),
    ("mcunet", {"num_classes": 1}, "num_classes must be an int >= 2, got 1"),
    ("mcunet", {"num_classes": 2.5}, "num_classes"),
    ("mobilenet_v2", {"input_shape": (3, 32)}, r"input_shape must be \(C, H, W\)"),
    ("mobilenet_v2", {"input_shape": (3, 7, 32)}, "too small for mobilenet_v2.*H must be >= 8"),
    ("resnet20", {"input_shape": (3, 32, 3)}, "too small for resnet20"),
    ("shufflenet_v2", {"input_shape": (1, 4, 4)}, "too small"),
    ("mobilenet_v1", {"stem_stride": 3}, "stem_stride"),
    ("mobilenet_v1", {"act": "gelu"}, "act must be one of"),
    ("mobilenet_v2", {"last_channels": 0}, "last_channels"),
    ("dscnn", {"first_kernel": (10,)}, "first_kernel"),
    ("dscnn", {"channels": 0}, "channels"),
    ("dscnn", {"input_shape": (1, 49, 1)}, "too small"),
])
def test_bad_values_name_the_parameter(family: str, params: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build(ArchSpec(family, params))


def test_smallest_accepted_input() -> None:
    build(ArchSpec("resnet8", {"input_shape": (3, 4, 4)}))  # total stride 4
    build(ArchSpec("mobilenet_v2", {"input_shape": (1, 8, 8)}))  # total stride 8


def test_register_model_checks_the_builder() -> None:
    def no_width(*, num_classes: int = 10, input_shape: tuple = (3, 32, 32)) -> nn.Module:
        raise AssertionError

    def positional(depth: int, *, num_classes: int = 10, input_shape: tuple = (3, 32, 32),
                   width_mult: float = 1.0) -> nn.Module:
        raise AssertionError

    def ok(*, num_classes: int = 10, input_shape: tuple = (3, 32, 32), width_mult: float = 1.0) -> nn.Module:
        raise AssertionError

    with pytest.raises(ConfigError, match="width_mult"):
        register_model("test_no_width", description="x", input_kind="image")(no_width)
    with pytest.raises(ConfigError, match="'depth' must be keyword-only"):
        register_model("test_positional", description="x", input_kind="image")(positional)
    with pytest.raises(ConfigError, match="already registered"):
        register_model("resnet8", description="x", input_kind="image")(ok)
    with pytest.raises(ConfigError, match="input_kind"):
        register_model("test_kind", description="x", input_kind="video")
    assert "test_no_width" not in MODELS and "test_positional" not in MODELS


def test_shufflenet_gather_is_a_channel_shuffle() -> None:
    assert shuffle_indices(6, 2).tolist() == [0, 3, 1, 4, 2, 5]
    x = torch.randn(2, 12, 3, 3)
    assert torch.equal(channel_shuffle(x, 2), x.index_select(1, shuffle_indices(12, 2)))
