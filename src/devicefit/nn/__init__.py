"""Export-friendly blocks, analytic cost (params, MACs, peak activation memory), ONNX export and losses."""

from ._blocks import (
    ACTIVATIONS,
    BasicBlock,
    ConvBNAct,
    DepthwiseSeparable,
    InvertedResidual,
    SqueezeExcite,
    make_activation,
    make_divisible,
)
from ._cost import CostReport, LayerCost, analyze, tensor_metas
from ._losses import distillation_loss
from ._onnx import DEFAULT_OPSET, export_onnx

__all__ = [
    "ACTIVATIONS",
    "DEFAULT_OPSET",
    "BasicBlock",
    "ConvBNAct",
    "CostReport",
    "DepthwiseSeparable",
    "InvertedResidual",
    "LayerCost",
    "SqueezeExcite",
    "analyze",
    "distillation_loss",
    "export_onnx",
    "make_activation",
    "make_divisible",
    "tensor_metas",
]
