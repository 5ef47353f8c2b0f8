"""KV-cache quantization as in KIVI (Liu et al., 2024): keys per channel over groups of tokens,
values per token, asymmetric min-max with fp16 scale/min; the trailing incomplete key group
stays in full precision. Also the cache's size in bytes for a given context length."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from devicefit.core import ConfigError

from ._model import Llama, LlamaConfig

__all__ = ["KVQuantConfig", "KVQuantizer", "kv_cache_bytes", "set_kv_quant_"]


@dataclass(frozen=True)
class KVQuantConfig:
    """`bits` per cached element (2..8); keys share a scale/min per channel over `key_group_tokens`
    tokens; values per token over groups of `value_group` consecutive channels of the token's
    n_kv_heads * head_dim values (0 = all of them), as KIVI groups them."""

    bits: int = 4
    key_group_tokens: int = 32
    value_group: int = 32

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 8:
            raise ConfigError(f"kv bits must be in 2..8, got {self.bits}")
        if self.key_group_tokens < 1 or self.value_group < 0:
            raise ConfigError(f"key_group_tokens must be >= 1 and value_group >= 0, got "
                              f"{self.key_group_tokens}, {self.value_group}")


def _minmax(x: torch.Tensor, dim: int, bits: int) -> torch.Tensor:
    """Quantize-dequantize x with one fp16 (scale, min) pair per slice along `dim`."""
    lo = x.amin(dim, keepdim=True).half().float()
    d = ((x.amax(dim, keepdim=True) - lo) / (2 ** bits - 1)).half().float()
    q = torch.round((x - lo) / torch.where(d == 0, torch.ones_like(d), d)).clamp(0, 2 ** bits - 1)
    return q * d + lo


class KVQuantizer:
    """Callable `(k, v) -> (k', v')` on (B, T, H, D) tensors; set it as `model.kv_transform`.

    Applied to the whole cache each step from full-precision copies, which equals a streaming
    KIVI cache: complete key groups and every value row depend only on their own entries;
    `key_ready` tells attention which keys a given query sees quantized.
    """

    def __init__(self, config: KVQuantConfig) -> None:
        self.config = config

    def __call__(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.keys(k), self.values(v)

    def key_ready(self, start_pos: int, n_queries: int, n_keys: int) -> torch.Tensor:
        """(n_queries, n_keys) bool: key t is stored quantized when query start_pos + i runs,
        i.e. its group of `key_group_tokens` was complete by then."""
        G = self.config.key_group_tokens
        group_end = (torch.arange(n_keys) // G + 1) * G
        return group_end[None, :] <= torch.arange(start_pos, start_pos + n_queries)[:, None] + 1

    def keys(self, k: torch.Tensor) -> torch.Tensor:
        B, T, H, D = k.shape
        G = self.config.key_group_tokens
        full = T // G * G
        if full == 0:
            return k
        kq = _minmax(k[:, :full].reshape(B, full // G, G, H, D), 2, self.config.bits).reshape(B, full, H, D)
        return torch.cat([kq, k[:, full:]], dim=1)

    def values(self, v: torch.Tensor) -> torch.Tensor:
        B, T, H, D = v.shape
        g = _value_group(self.config, H * D)
        return _minmax(v.reshape(B, T, H * D // g, g), 3, self.config.bits).reshape(B, T, H, D)


def _value_group(kv: KVQuantConfig, row: int) -> int:
    g = kv.value_group or row
    if row % g:
        raise ConfigError(f"value_group {g} does not divide the {row} values cached per token and layer")
    return g


def kv_cache_bytes(cfg: LlamaConfig, context: int, kv: KVQuantConfig | None = None, float_bytes: int = 2) -> int:
    """Bytes of the KV cache of one sequence of `context` tokens: `float_bytes` per element
    unquantized (fp16 = 2, llama.cpp's default); quantized: packed codes + fp16 scale/min per
    group, with the trailing incomplete key group at `float_bytes`."""
    per_token = cfg.n_layers * cfg.n_kv_heads * cfg.head_dim  # elements of K (and of V) per token
    if kv is None:
        return 2 * per_token * context * float_bytes
    G = kv.key_group_tokens
    full, rest = context // G * G, context % G
    keys = per_token * full * kv.bits / 8 + per_token * (full // G) * 4 + per_token * rest * float_bytes
    g = _value_group(kv, cfg.n_kv_heads * cfg.head_dim)
    values = per_token * context * kv.bits / 8 + per_token // g * context * 4
    return round(keys + values)


def set_kv_quant_(model: Llama, kv: KVQuantConfig | None) -> Llama:
    """Make `model` (in place) use a quantized KV cache (None = exact); returns it."""
    model.kv_transform = KVQuantizer(kv) if kv is not None else None
    return model
