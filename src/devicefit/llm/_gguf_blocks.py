"""Byte layout of ggml's legacy block types (Q8_0, Q4_0, Q4_1, Q5_0): packing grid codes and
fp16 scales into blocks of 32 weights and back, byte-identical to `gguf.quants`."""

from __future__ import annotations

import numpy as np
import torch

from devicefit.core import ConfigError, UnsupportedOpError

from ._grids import GRIDS
from ._groupq import QuantizedMatrix

__all__ = ["BLOCK_BYTES", "pack_matrix", "unpack_matrix"]

QK = 32
BLOCK_BYTES = {"q8_0": 34, "q4_0": 18, "q4_1": 20, "q5_0": 22}


def _nibbles(q: np.ndarray) -> np.ndarray:
    """(n, 32) codes -> (n, 16) bytes: low nibble = code j, high nibble = code j + 16."""
    return (q[:, :16] & 0x0F) | ((q[:, 16:] & 0x0F) << 4)


def _unnibble(qs: np.ndarray) -> np.ndarray:
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1)


def pack_matrix(qm: QuantizedMatrix, fmt: str) -> np.ndarray:
    """Bytes (rows, cols/32 * block bytes) of `qm` in GGUF type `fmt`; its grid must be that type's."""
    if fmt not in BLOCK_BYTES or GRIDS.get(fmt) != qm.grid:
        raise ConfigError(f"cannot pack a {qm.grid.name} matrix as {fmt!r}; formats: {sorted(BLOCK_BYTES)}")
    rows, cols = qm.codes.shape
    if cols % QK:
        raise UnsupportedOpError(f"GGUF {fmt} needs rows of a multiple of {QK} weights, got {cols}")
    q = qm.codes.numpy().astype(np.uint8).reshape(-1, QK)
    d = qm.d.numpy().astype(np.float16).reshape(-1, 1).view(np.uint8)
    if fmt == "q8_0":
        body = [d, (q.astype(np.int16) - 128).astype(np.int8).view(np.uint8)]
    elif fmt == "q4_0":
        body = [d, _nibbles(q)]
    elif fmt == "q4_1":
        body = [d, qm.m.numpy().astype(np.float16).reshape(-1, 1).view(np.uint8), _nibbles(q)]
    else:  # q5_0: fifth bits gathered little-endian into 4 bytes
        qh = np.packbits((q >> 4) & 1, axis=-1, bitorder="little")
        body = [d, qh, _nibbles(q)]
    return np.concatenate(body, axis=1).reshape(rows, -1)


def unpack_matrix(data: np.ndarray, fmt: str, cols: int) -> QuantizedMatrix:
    """Inverse of `pack_matrix`: bytes (rows, n) of GGUF type `fmt` -> codes and scales."""
    if fmt not in BLOCK_BYTES:
        raise UnsupportedOpError(f"GGUF tensor type {fmt!r} is not supported; supported: {sorted(BLOCK_BYTES)}")
    rows = data.shape[0]
    b = np.ascontiguousarray(data, dtype=np.uint8).reshape(-1, BLOCK_BYTES[fmt])
    d = b[:, :2].copy().view(np.float16).astype(np.float32)
    m = np.zeros_like(d)
    if fmt == "q8_0":
        q = (b[:, 2:].view(np.int8).astype(np.int16) + 128).astype(np.uint8)
    elif fmt == "q4_0":
        q = _unnibble(b[:, 2:])
    elif fmt == "q4_1":
        m = b[:, 2:4].copy().view(np.float16).astype(np.float32)
        q = _unnibble(b[:, 4:])
    else:
        hi = np.unpackbits(b[:, 2:6], axis=-1, bitorder="little")
        q = _unnibble(b[:, 6:]) | (hi << 4)
    n_groups = cols // QK
    bounds = [(a, a + QK) for a in range(0, cols, QK)]
    return QuantizedMatrix(GRIDS.get(fmt), torch.from_numpy(q.reshape(rows, cols)),
                           torch.from_numpy(d.reshape(rows, n_groups)), torch.from_numpy(m.reshape(rows, n_groups)),
                           bounds)
