"""GGUF files of Llama-family models: `load_gguf` reads any file whose tensors are F32/F16 or one
of the legacy block types into `Llama` (+ its tokenizer); `write_gguf` writes a model with its
quantized matrices packed in their GGUF type, atomically, readable by `gguf.GGUFReader`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from devicefit.core import DataError, UnsupportedOpError, atomic_open

from ._gguf_blocks import BLOCK_BYTES, pack_matrix, unpack_matrix
from ._groupq import QuantizedMatrix
from ._model import Llama, LlamaConfig
from ._quant import QuantizedLlama
from ._tokenizer import BpeTokenizer, SentencePieceTokenizer, Tokenizer

__all__ = ["GGUFInfo", "load_gguf", "write_gguf"]

_BLOCK_NAMES = {"attention.wq": "attn_q", "attention.wk": "attn_k", "attention.wv": "attn_v",
                "attention.wo": "attn_output", "feed_forward.w1": "ffn_gate", "feed_forward.w2": "ffn_down",
                "feed_forward.w3": "ffn_up", "attention_norm": "attn_norm", "ffn_norm": "ffn_norm"}
_TOP_NAMES = {"tok_embeddings": "token_embd", "norm": "output_norm", "output": "output"}


@dataclass(frozen=True)
class GGUFInfo:
    """What a GGUF file held: path, model name, tensor types (name -> GGML type), file bytes."""

    path: str
    name: str
    tensor_types: dict[str, str]
    file_bytes: int
    matrices: dict[str, QuantizedMatrix | None] = field(default_factory=dict, repr=False)


def _gguf():  # type: ignore[no-untyped-def]
    try:
        import gguf
    except ImportError as err:  # pragma: no cover - gguf is a declared dependency
        raise UnsupportedOpError("reading/writing GGUF needs the `gguf` package: pip install gguf") from err
    return gguf


def _gguf_name(ours: str) -> str:
    parts = ours.removesuffix(".weight").split(".")
    if parts[0] == "layers":
        return f"blk.{parts[1]}.{_BLOCK_NAMES['.'.join(parts[2:])]}.weight"
    return f"{_TOP_NAMES[parts[0]]}.weight"


def _field(reader: Any, key: str, path: Path, default: Any = None) -> Any:
    f = reader.fields.get(key)
    if f is None:
        if default is None:
            raise DataError(f"{path}: GGUF metadata key {key!r} is missing")
        return default
    return f.contents()


def _read_config(reader: Any, path: Path, names: set[str]) -> LlamaConfig:
    arch = _field(reader, "general.architecture", path)
    if arch != "llama":
        raise UnsupportedOpError(f"{path}: architecture {arch!r} is not supported; expected 'llama'")
    a = "llama."
    dim = int(_field(reader, a + "embedding_length", path))
    n_heads = int(_field(reader, a + "attention.head_count", path))
    rope_dim = int(_field(reader, a + "rope.dimension_count", path, dim // n_heads))
    if rope_dim != dim // n_heads:
        raise UnsupportedOpError(f"{path}: partial RoPE (rope.dimension_count {rope_dim}) is not supported")
    vocab = len(reader.fields["tokenizer.ggml.tokens"].data) if "tokenizer.ggml.tokens" in reader.fields else 0
    return LlamaConfig(dim=dim, hidden_dim=int(_field(reader, a + "feed_forward_length", path)),
                       n_layers=int(_field(reader, a + "block_count", path)), n_heads=n_heads,
                       n_kv_heads=int(_field(reader, a + "attention.head_count_kv", path, n_heads)),
                       vocab_size=int(_field(reader, a + "vocab_size", path, vocab or 0)),
                       max_seq_len=int(_field(reader, a + "context_length", path)),
                       norm_eps=float(_field(reader, a + "attention.layer_norm_rms_epsilon", path, 1e-5)),
                       rope_theta=float(_field(reader, a + "rope.freq_base", path, 10000.0)),
                       tied_embeddings="output.weight" not in names)


def _tensor(t: Any, path: Path) -> tuple[np.ndarray, QuantizedMatrix | None]:
    gguf = _gguf()
    kind = t.tensor_type.name.lower()
    if kind in ("f32", "f16"):
        return np.asarray(t.data, dtype=np.float32).reshape(tuple(int(x) for x in reversed(t.shape))), None
    if kind not in BLOCK_BYTES:
        raise UnsupportedOpError(f"{path}: tensor {t.name} has GGUF type {t.tensor_type.name}; "
                                 f"supported: F32, F16, {', '.join(k.upper() for k in sorted(BLOCK_BYTES))}")
    qm = unpack_matrix(np.asarray(t.data), kind, int(t.shape[0]))
    return gguf.quants.dequantize(np.asarray(t.data), t.tensor_type), qm


def load_gguf(path: str | os.PathLike[str], max_seq_len: int | None = None) -> tuple[Llama, Tokenizer, GGUFInfo]:
    """Load a Llama-family GGUF into `Llama` (weights dequantized to float32) and its tokenizer.

    `max_seq_len` caps the context (RoPE tables) below the file's `context_length`. Raises
    `DataError` for a missing/corrupt file or missing tensor, `UnsupportedOpError` for another
    architecture or tensor type.
    """
    gguf, path = _gguf(), Path(path)
    if not path.is_file():
        raise DataError(f"GGUF file {str(path)!r} does not exist")
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, IndexError, OSError) as err:
        raise DataError(f"{path}: not a readable GGUF file ({err})") from err
    tensors = {t.name: t for t in reader.tensors}
    cfg = _read_config(reader, path, set(tensors))
    if max_seq_len:
        cfg = LlamaConfig(**{**cfg.__dict__, "max_seq_len": min(max_seq_len, cfg.max_seq_len)})
    model, matrices, types = Llama(cfg), {}, {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            g = _gguf_name(name)
            if g not in tensors:
                raise DataError(f"{path}: tensor {g!r} (for {name}) is missing")
            arr, qm = _tensor(tensors[g], path)
            if tuple(arr.shape) != tuple(p.shape):
                raise DataError(f"{path}: tensor {g} has shape {arr.shape}, expected {tuple(p.shape)}")
            p.copy_(torch.from_numpy(np.array(arr, dtype=np.float32)))
            if qm is not None or tensors[g].tensor_type.name == "F16":
                matrices[name.removesuffix(".weight")] = qm  # F16 -> None (a float fallback); F32 left out
            types[g] = tensors[g].tensor_type.name
    info = GGUFInfo(str(path), str(_field(reader, "general.name", path, path.stem)), types,
                    path.stat().st_size, matrices)
    return model.eval(), _read_tokenizer(reader, path), info


def _read_tokenizer(reader: Any, path: Path) -> Tokenizer:
    kind = _field(reader, "tokenizer.ggml.model", path)
    tokens = list(_field(reader, "tokenizer.ggml.tokens", path))
    bos = int(_field(reader, "tokenizer.ggml.bos_token_id", path, 1))
    eos = int(_field(reader, "tokenizer.ggml.eos_token_id", path, 2))
    if kind == "gpt2":
        return BpeTokenizer(tokens, list(_field(reader, "tokenizer.ggml.merges", path)), bos, eos,
                            bool(_field(reader, "tokenizer.ggml.add_bos_token", path, False)))
    if kind == "llama":
        scores = [float(s) for s in _field(reader, "tokenizer.ggml.scores", path)]
        pieces = [t.replace("\u2581", " ").encode("utf-8") for t in tokens]
        return SentencePieceTokenizer(pieces, scores, bos, eos,
                                      bool(_field(reader, "tokenizer.ggml.add_space_prefix", path, True)))
    raise UnsupportedOpError(f"{path}: tokenizer model {kind!r} is not supported; expected 'llama' or 'gpt2'")


def write_gguf(model: Llama | QuantizedLlama, tokenizer: Tokenizer, path: str | os.PathLike[str],
               name: str = "devicefit") -> Path:
    """Write `model` as a GGUF v3 file; quantized matrices in GGUF grids are stored in their block
    type, float fallbacks as F16, everything else as F32. Matrices on a grid GGUF has no type
    for (e.g. int3, ragged groups) raise `UnsupportedOpError`. The file appears atomically."""
    gguf, path = _gguf(), Path(path)
    q = model if isinstance(model, QuantizedLlama) else None
    llama = q.model if q else model
    writer = gguf.GGUFWriter(None, "llama")
    _write_meta(writer, llama.cfg, name)
    _write_tokenizer(writer, tokenizer)
    for pname, p in llama.named_parameters():
        key = pname.removesuffix(".weight")
        data, raw = _tensor_bytes(q, key, p)
        writer.add_tensor(_gguf_name(pname), data, raw_dtype=raw)
    with atomic_open(path, "wb") as f:
        # hand the writer our temp file; it then writes exactly as it would to its own
        writer.fout = [f]
        writer.state = gguf.gguf_writer.WriterState.EMPTY
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    return path


def _tensor_bytes(q: QuantizedLlama | None, key: str, p: torch.Tensor) -> tuple[np.ndarray, Any]:
    gguf = _gguf()
    w = p.detach().float().numpy()
    if q is None or key not in q.matrices:
        return w, None
    qm = q.matrices[key]
    if qm is None:
        return w.astype(np.float16), None
    fmt = q.format_name
    if fmt not in BLOCK_BYTES:
        raise UnsupportedOpError(f"{key}: weight format {fmt!r} has no GGUF type; use one of {sorted(BLOCK_BYTES)}")
    return pack_matrix(qm, fmt), gguf.GGMLQuantizationType[fmt.upper()]


def _write_meta(writer: Any, cfg: LlamaConfig, name: str) -> None:
    writer.add_name(name)
    writer.add_context_length(cfg.max_seq_len)
    writer.add_embedding_length(cfg.dim)
    writer.add_block_count(cfg.n_layers)
    writer.add_feed_forward_length(cfg.hidden_dim)
    writer.add_head_count(cfg.n_heads)
    writer.add_head_count_kv(cfg.n_kv_heads)
    writer.add_rope_dimension_count(cfg.head_dim)
    writer.add_rope_freq_base(cfg.rope_theta)
    writer.add_layer_norm_rms_eps(cfg.norm_eps)
    writer.add_vocab_size(cfg.vocab_size)


def _write_tokenizer(writer: Any, tok: Tokenizer) -> None:
    writer.add_bos_token_id(tok.bos_id)
    writer.add_eos_token_id(tok.eos_id)
    if isinstance(tok, BpeTokenizer):
        writer.add_tokenizer_model("gpt2")
        writer.add_add_bos_token(tok.add_bos)
        writer.add_token_list(tok.tokens)
        writer.add_token_merges([" ".join(k) for k, _ in sorted(tok._ranks.items(), key=lambda kv: kv[1])])
        return
    if not isinstance(tok, SentencePieceTokenizer):
        raise UnsupportedOpError(f"cannot write a {type(tok).__name__} into GGUF")
    writer.add_tokenizer_model("llama")
    writer.add_token_list([p.decode("utf-8", "replace").replace(" ", "\u2581") for p in tok.pieces])
    writer.add_token_scores(tok.scores)
    types = [3 if i in (tok.bos_id, tok.eos_id) else 6 if i in tok._byte_ids.values() else 2 if i == 0 else 1
             for i in range(tok.vocab_size)]
    writer.add_token_types(types)
    writer.add_add_space_prefix(tok.add_space_prefix)
