"""ONNX export of a model in eval mode, through the legacy (TorchScript) or dynamo exporter, to one file.

The file is checked with `onnx.checker` in memory and written atomically, so a failed export leaves nothing.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from devicefit.core import ConfigError, UnsupportedOpError, atomic_write_bytes

from ._cost import check_input_shape, example_input

__all__ = ["DEFAULT_OPSET", "export_onnx"]

DEFAULT_OPSET = 17  # the legacy exporter's tested range ends at 20; 17 has LayerNorm and is widely supported
INPUT_NAME, OUTPUT_NAME = "input", "output"


def _legacy_bytes(model: nn.Module, x: torch.Tensor, opset: int, dynamic_batch: bool) -> bytes:
    axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    buf = io.BytesIO()
    torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                      output_names=[OUTPUT_NAME], dynamic_axes=axes, do_constant_folding=True)
    return buf.getvalue()


def _dynamo_bytes(model: nn.Module, x: torch.Tensor, opset: int | None, dynamic_batch: bool) -> bytes:
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter needs it; fail with a clear message first)
    except ImportError as e:
        raise UnsupportedOpError("the dynamo ONNX exporter needs onnxscript: pip install 'onnxscript>=0.2'") from e
    shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    program = torch.onnx.export(model, (x,), dynamo=True, external_data=False, opset_version=opset,
                                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_shapes=shapes,
                                verbose=False)
    if program is None:  # only happens when `f` is given; kept for type narrowing
        raise UnsupportedOpError("the dynamo exporter returned no program")
    return program.model_proto.SerializeToString()


def _checked(data: bytes) -> bytes:
    import onnx

    onnx.checker.check_model(onnx.load_from_string(data), full_check=False)
    return data


def _validate(input_shape: Sequence[int], opset: int | None) -> tuple[int, ...]:
    shape = check_input_shape(input_shape)
    if opset is not None and (not isinstance(opset, int) or not 7 <= opset <= 23):
        raise ConfigError(f"opset must be an int in [7, 23] or None, got {opset!r}")
    return shape


def export_onnx(
    model: nn.Module,
    input_shape: Sequence[int],
    path: str | os.PathLike[str],
    *,
    dynamo: bool = False,
    opset: int | None = None,
    dynamic_batch: bool = False,
) -> Path:
    """Export `model` (in eval mode; its mode is restored afterwards) for inputs (B, *input_shape) to `path`.

    The graph has one input "input" and one output "output"; batch is 1 unless `dynamic_batch`, which
    names axis 0 "batch". `dynamo=False` uses the legacy exporter (opset default `DEFAULT_OPSET`);
    `dynamo=True` uses torch.export + onnxscript (opset default: the exporter's), weights inline.
    The model is validated with `onnx.checker` before the file is (atomically) written.
    Raises `UnsupportedOpError` naming the model and the exporter's message when export fails.
    """
    shape = _validate(input_shape, opset)
    x = example_input(model, shape)
    was_training = model.training
    model.eval()
    exporter = "dynamo" if dynamo else "legacy"
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            if dynamo:
                data = _dynamo_bytes(model, x, opset, dynamic_batch)
            else:
                data = _legacy_bytes(model, x, opset or DEFAULT_OPSET, dynamic_batch)
            data = _checked(data)
    except UnsupportedOpError:
        raise
    except Exception as e:  # exporters raise many types (RuntimeError, TorchExportError, ValidationError...)
        msg = " ".join(str(e).split())[:800] or type(e).__name__
        raise UnsupportedOpError(f"cannot export {type(model).__name__} to ONNX with the {exporter} exporter: "
                                 f"{msg}") from e
    finally:
        model.train(was_training)
    return atomic_write_bytes(path, data)
