"""Reader of llama2.c "legacy" (v0) checkpoints: a 7-int32 header then float32 arrays."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import torch

from devicefit.core import DataError

from ._model import Llama, LlamaConfig

__all__ = ["load_llama2c"]

_HEADER = struct.Struct("<7i")


def _read_header(path: Path, raw: bytes) -> LlamaConfig:
    if len(raw) < _HEADER.size:
        raise DataError(f"{path}: llama2.c checkpoint must start with a {_HEADER.size}-byte header, "
                        f"got {len(raw)} bytes")
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq = _HEADER.unpack_from(raw)
    fields = dict(dim=dim, hidden_dim=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv,
                  vocab_size=abs(vocab), max_seq_len=seq)
    if min(fields.values()) <= 0 or max(fields.values()) > 1 << 20:
        raise DataError(f"{path}: not a llama2.c checkpoint (implausible header {fields})")
    try:
        return LlamaConfig(**fields, tied_embeddings=vocab > 0)
    except ValueError as err:
        raise DataError(f"{path}: header {fields} is not a valid Llama shape: {err}") from err


def _layout(cfg: LlamaConfig) -> list[tuple[str, tuple[int, ...]]]:
    L, d, h, hd = cfg.n_layers, cfg.dim, cfg.hidden_dim, cfg.head_dim
    kv = cfg.n_kv_heads * hd
    out = [("tok_embeddings", (cfg.vocab_size, d)), ("rms_att", (L, d)), ("wq", (L, d, d)),
           ("wk", (L, kv, d)), ("wv", (L, kv, d)), ("wo", (L, d, d)), ("rms_ffn", (L, d)),
           ("w1", (L, h, d)), ("w2", (L, d, h)), ("w3", (L, h, d)), ("rms_final", (d,)),
           ("freq_cis", (2, cfg.max_seq_len, hd // 2))]
    if not cfg.tied_embeddings:
        out.append(("wcls", (cfg.vocab_size, d)))
    return out


def load_llama2c(path: str | os.PathLike[str]) -> Llama:
    """Load a llama2.c v0 checkpoint into `Llama` (eval mode). Raises `DataError` naming the file
    on a bad header or when the file size does not match the header's shapes."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"llama2.c checkpoint {str(path)!r} does not exist")
    raw = path.read_bytes()
    cfg = _read_header(path, raw)
    layout = _layout(cfg)
    n_floats = sum(int(np.prod(s)) for _, s in layout)
    expected = _HEADER.size + 4 * n_floats
    if len(raw) != expected:
        raise DataError(f"{path}: header {cfg} implies {expected} bytes, file has {len(raw)} "
                        "(truncated or corrupt checkpoint)")
    flat = np.frombuffer(raw, dtype="<f4", offset=_HEADER.size)
    arrays, pos = {}, 0
    for name, shape in layout:
        n = int(np.prod(shape))
        arrays[name] = torch.from_numpy(flat[pos:pos + n].reshape(shape).copy())
        pos += n
    if not all(torch.isfinite(a).all() for a in arrays.values()):
        raise DataError(f"{path}: checkpoint contains non-finite weights (corrupt file)")
    return _fill(cfg, arrays)


def _fill(cfg: LlamaConfig, a: dict[str, torch.Tensor]) -> Llama:
    model = Llama(cfg)
    with torch.no_grad():
        model.tok_embeddings.weight.copy_(a["tok_embeddings"])
        for i, blk in enumerate(model.layers):
            blk.attention_norm.weight.copy_(a["rms_att"][i])
            blk.ffn_norm.weight.copy_(a["rms_ffn"][i])
            for w in ("wq", "wk", "wv", "wo"):
                getattr(blk.attention, w).weight.copy_(a[w][i])
            for w in ("w1", "w2", "w3"):
                getattr(blk.feed_forward, w).weight.copy_(a[w][i])
        model.norm.weight.copy_(a["rms_final"])
        if not cfg.tied_embeddings:
            model.output.weight.copy_(a["wcls"])
    return model.eval()
