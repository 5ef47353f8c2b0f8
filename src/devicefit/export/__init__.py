"""Microcontroller deployment: int8 IR and converter, integer reference, memory planner, C generator, tool chains,
.tflite export and TFLite Micro cross-check."""

from ._cgen import CProject, emitter_for, generate_c, plan_for_c
from ._convert import QUANTIZERS, Int8Converter, convert_to_int8, dequantize_output, quantize_input
from ._emitters import EMITTERS, OpEmitter
from ._fixedpoint import (
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)
from ._fuse import FUSION_RULES
from ._fuse_add import CONV_ADD_KINDS, fuse_conv_add, split_conv_add, unfuse_conv_add
from ._ir import OP_KINDS, QGraph, QOp, QTensor
from ._mcu import CoreRun, MemoryFit, check_memory_fit, run_on_core
from ._memory import ArenaPlan, graph_buffers, plan_arena
from ._planner import (
    MEMORY_PLANNERS,
    Buffer,
    GreedyBySizePlanner,
    MemoryPlanner,
    NaivePlanner,
    live_lower_bound_bytes,
)
from ._ranges import RANGE_ESTIMATORS, EmaMinMax, MinMax, RangeEstimator, qparams_from_range
from ._reference import REFERENCE_KERNELS, run_reference
from ._tflite import TFLITE_WRITERS, TFLM_ARENA_METHOD, tflite_bytes, tflm_arena, tflm_run
from ._toolchain import CORES, Core, ToolchainError, build_host, require_tool, run_host

__all__ = [
    "CONV_ADD_KINDS",
    "CORES",
    "EMITTERS",
    "FUSION_RULES",
    "MEMORY_PLANNERS",
    "OP_KINDS",
    "QUANTIZERS",
    "RANGE_ESTIMATORS",
    "REFERENCE_KERNELS",
    "TFLITE_WRITERS",
    "TFLM_ARENA_METHOD",
    "ArenaPlan",
    "Buffer",
    "CProject",
    "Core",
    "CoreRun",
    "EmaMinMax",
    "GreedyBySizePlanner",
    "Int8Converter",
    "MemoryFit",
    "MemoryPlanner",
    "MinMax",
    "NaivePlanner",
    "OpEmitter",
    "QGraph",
    "QOp",
    "QTensor",
    "RangeEstimator",
    "ToolchainError",
    "build_host",
    "check_memory_fit",
    "convert_to_int8",
    "dequantize_output",
    "emitter_for",
    "fuse_conv_add",
    "generate_c",
    "graph_buffers",
    "live_lower_bound_bytes",
    "multiply_by_quantized_multiplier",
    "plan_arena",
    "plan_for_c",
    "qparams_from_range",
    "quantize_input",
    "quantize_multiplier",
    "require_tool",
    "rounding_divide_by_pot",
    "run_host",
    "run_on_core",
    "run_reference",
    "saturating_rounding_doubling_high_mul",
    "split_conv_add",
    "tflite_bytes",
    "tflm_arena",
    "tflm_run",
    "unfuse_conv_add",
]
