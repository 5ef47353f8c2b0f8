"""Small language models on the edge: one Llama implementation loaded from llama2.c or GGUF
files, perplexity/KL/speed/memory evaluation, group-wise and GGUF-exact weight quantization
(RTN, GPTQ, AWQ, scale tuning), GGUF export, packed int4/int8 CPU kernels, KV-cache
quantization and Wanda pruning."""

from . import _awq as _awq  # registers "awq" and "awq-gptq"
from . import _gptq as _gptq  # registers "gptq"
from ._eval import LMScore, decode_speed, reference_logprobs, score_lm
from ._generate import Generation, generate
from ._gguf import GGUFInfo, load_gguf, write_gguf
from ._gguf_blocks import pack_matrix, unpack_matrix
from ._grids import GRIDS, AbsMaxGrid, Grid, MinMaxGrid, SignedMaxGrid, parse_grid
from ._groupq import QuantizedMatrix, quantize_matrix
from ._kvquant import KVQuantConfig, KVQuantizer, kv_cache_bytes, set_kv_quant_
from ._llama2c import load_llama2c
from ._model import KVCache, Llama, LlamaConfig, linear_names
from ._quant import (
    QUANTIZERS,
    QuantizedLlama,
    RTNQuantizer,
    WeightQuantConfig,
    block_bits_per_weight,
    quantize_llama,
    weight_bytes,
)
from ._runtime import KERNELS, Int4PackedLinear, Int8PackedLinear, PackedLlama, model_bytes, pack_llama
from ._text import Corpus, clean_stories, encode_texts, load_stories, split_eval_calib
from ._tokenizer import BpeTokenizer, SentencePieceTokenizer, Tokenizer, load_llama2c_tokenizer
from ._tune import ScaleTuneConfig, tune_scales_
from ._wanda import PRUNE_SCORES, PruneConfig, PrunedLlama, prune_llama
from ._zoo import LMS, LoadedLM, list_lms, load_lm

AWQQuantizer = _awq.AWQQuantizer
AWQGPTQQuantizer = _awq.AWQGPTQQuantizer
GPTQQuantizer = _gptq.GPTQQuantizer

__all__ = [
    "GRIDS",
    "KERNELS",
    "LMS",
    "PRUNE_SCORES",
    "QUANTIZERS",
    "AWQGPTQQuantizer",
    "AWQQuantizer",
    "AbsMaxGrid",
    "BpeTokenizer",
    "Corpus",
    "GGUFInfo",
    "GPTQQuantizer",
    "Generation",
    "Grid",
    "Int4PackedLinear",
    "Int8PackedLinear",
    "KVCache",
    "KVQuantConfig",
    "KVQuantizer",
    "LMScore",
    "Llama",
    "LlamaConfig",
    "LoadedLM",
    "MinMaxGrid",
    "PackedLlama",
    "PruneConfig",
    "PrunedLlama",
    "QuantizedLlama",
    "QuantizedMatrix",
    "RTNQuantizer",
    "ScaleTuneConfig",
    "SentencePieceTokenizer",
    "SignedMaxGrid",
    "Tokenizer",
    "WeightQuantConfig",
    "block_bits_per_weight",
    "clean_stories",
    "decode_speed",
    "encode_texts",
    "generate",
    "kv_cache_bytes",
    "linear_names",
    "list_lms",
    "load_gguf",
    "load_llama2c",
    "load_llama2c_tokenizer",
    "load_lm",
    "load_stories",
    "model_bytes",
    "pack_llama",
    "pack_matrix",
    "parse_grid",
    "prune_llama",
    "quantize_llama",
    "quantize_matrix",
    "reference_logprobs",
    "score_lm",
    "set_kv_quant_",
    "split_eval_calib",
    "tune_scales_",
    "unpack_matrix",
    "weight_bytes",
    "write_gguf",
]
