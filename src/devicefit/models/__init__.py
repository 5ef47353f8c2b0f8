"""The model zoo: hand-crafted efficient networks registered by family name and built from an `ArchSpec`."""

from . import dscnn, mcunet, mobilenet_v1, mobilenet_v2, resnet8, resnet20, resnet_cifar, shufflenet_v2  # noqa: F401  (register)
from ._registry import INPUT_KINDS, MODELS, ModelInfo, build, cost, default_spec, list_models, register_model

__all__ = [
    "INPUT_KINDS",
    "MODELS",
    "ModelInfo",
    "build",
    "cost",
    "default_spec",
    "list_models",
    "register_model",
]
