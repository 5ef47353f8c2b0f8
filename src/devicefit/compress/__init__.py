"""Compression: structured channel pruning (physical removal, latency-driven mode), depth pruning (residual blocks
removed), unstructured magnitude pruning,
int8 post-training quantization to ONNX QDQ (registered calibrators, CLE, bias correction, AdaRound), LSQ
quantization-aware training and mixed precision from measured layer sensitivity."""

from ._adaround import adaround_
from ._calibrators import (
    CALIBRATORS,
    Calibrator,
    EntropyCalibrator,
    MinMaxCalibrator,
    MSECalibrator,
    PercentileCalibrator,
    TensorHistogram,
    list_calibrators,
    make_calibrator,
)
from ._depth import (
    BLOCK_CRITERIA,
    BYPASSES,
    DepthPruneConfig,
    DepthPruner,
    block_scores,
    bypass_blocks,
    droppable_blocks,
    mean_loss,
    removable_blocks,
)
from ._fold import bias_correct_, equalize_, fold_batchnorm, relu6_to_relu_
from ._latency_prune import LatencyPruneConfig, prune_to_latency
from ._lsq import LSQConfig, LSQFakeQuant, LSQQuantizer, QuantWrapper, quant_layers
from ._mixed import choose_bit_widths, layer_sensitivity, weight_bytes
from ._onnx_run import FLOAT_COMPUTE_OPS, INT8_COMPUTE_OPS, evaluate_onnx, runtime_op_counts
from ._prune import (
    PruneConfig,
    PruneResult,
    StructuredPruner,
    classifier_layers,
    make_importance,
    one_group_channels,
    prunable_layers,
    unsupported_modules,
)
from ._ptq import PostTrainingQuantizer, PTQConfig, calibration_input, effective_weight_bits, needs_reduce_range
from ._qdq import fuse_activations, quantizable_tensors, write_qdq
from ._registry import IMPORTANCES, PRUNERS, QUANTIZERS, list_importances, list_pruners, list_quantizers
from ._resize import load_pruned_state_, pruned_shapes
from ._sparse import MagnitudeConfig, MagnitudePruner, sparse_storage_bytes

__all__ = [
    "BLOCK_CRITERIA",
    "BYPASSES",
    "CALIBRATORS",
    "FLOAT_COMPUTE_OPS",
    "IMPORTANCES",
    "INT8_COMPUTE_OPS",
    "PRUNERS",
    "QUANTIZERS",
    "Calibrator",
    "DepthPruneConfig",
    "DepthPruner",
    "EntropyCalibrator",
    "LSQConfig",
    "LSQFakeQuant",
    "LSQQuantizer",
    "LatencyPruneConfig",
    "MSECalibrator",
    "MagnitudeConfig",
    "MagnitudePruner",
    "MinMaxCalibrator",
    "PTQConfig",
    "PercentileCalibrator",
    "PostTrainingQuantizer",
    "PruneConfig",
    "PruneResult",
    "QuantWrapper",
    "StructuredPruner",
    "TensorHistogram",
    "adaround_",
    "bias_correct_",
    "block_scores",
    "bypass_blocks",
    "calibration_input",
    "choose_bit_widths",
    "classifier_layers",
    "droppable_blocks",
    "effective_weight_bits",
    "equalize_",
    "evaluate_onnx",
    "fold_batchnorm",
    "fuse_activations",
    "layer_sensitivity",
    "list_calibrators",
    "list_importances",
    "list_pruners",
    "list_quantizers",
    "load_pruned_state_",
    "make_calibrator",
    "make_importance",
    "mean_loss",
    "needs_reduce_range",
    "one_group_channels",
    "prunable_layers",
    "prune_to_latency",
    "pruned_shapes",
    "quant_layers",
    "quantizable_tensors",
    "relu6_to_relu_",
    "removable_blocks",
    "runtime_op_counts",
    "sparse_storage_bytes",
    "unsupported_modules",
    "weight_bytes",
    "write_qdq",
]
