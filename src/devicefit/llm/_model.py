"""The one small Llama implementation every loader fills: RMSNorm, RoPE on adjacent pairs,
grouped-query attention, SwiGLU, tied or separate classifier, and a KV cache for decoding."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from devicefit.core import ConfigError

__all__ = ["KVCache", "Llama", "LlamaConfig", "linear_names"]

# (B, T, H, D) keys and values -> the same, quantized; see `_kvquant.py`.
KVTransform = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class LlamaConfig:
    """Shape of a Llama-family model. `hidden_dim` is the SwiGLU width; heads share `dim`."""

    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    max_seq_len: int
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    tied_embeddings: bool = True

    def __post_init__(self) -> None:
        for name in ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"LlamaConfig.{name} must be a positive int, got {value!r}")
        if self.dim % self.n_heads or self.n_heads % self.n_kv_heads:
            raise ConfigError(f"LlamaConfig: dim ({self.dim}) must divide by n_heads ({self.n_heads}) and "
                              f"n_heads by n_kv_heads ({self.n_kv_heads})")
        if self.head_dim % 2:
            raise ConfigError(f"LlamaConfig: head_dim must be even for RoPE, got {self.head_dim}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * weight (Zhang & Sennrich 2019)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(cfg: LlamaConfig, n_pos: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of shape (n_pos, head_dim/2): angle = pos * theta^(-2i/head_dim)."""
    hd = cfg.head_dim
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    ang = torch.outer(torch.arange(n_pos, dtype=torch.float64), inv)
    return torch.cos(ang).float(), torch.sin(ang).float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs (x[2i], x[2i+1]) of x (B, T, H, D) as llama2.c `run.c` and ggml's NORM rope."""
    xr = x.float().reshape(*x.shape[:-1], -1, 2)
    a, b = xr[..., 0], xr[..., 1]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.stack((a * c - b * s, a * s + b * c), dim=-1).flatten(-2).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        hd = cfg.head_dim
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, hd
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * hd, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.n_kv_heads * hd, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.n_kv_heads * hd, bias=False)
        self.wo = nn.Linear(cfg.n_heads * hd, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None,
                layer: int, start_pos: int, kv_transform: KVTransform | None) -> torch.Tensor:
        B, T, _ = x.shape
        q = apply_rope(self.wq(x).view(B, T, self.n_heads, self.head_dim), cos, sin)
        k = apply_rope(self.wk(x).view(B, T, self.n_kv_heads, self.head_dim), cos, sin)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim)
        if cache is not None:
            k, v = cache.update(layer, start_pos, k, v)
        rep = self.n_heads // self.n_kv_heads
        # (B, H, T, D) layout; the causal mask is offset by start_pos when a cache is in use.
        mask = _causal_mask(T, k.shape[1], start_pos, x.device)
        if kv_transform is not None:
            out = _quantized_kv_attention(q, k, v, kv_transform, rep, mask, start_pos)
        else:
            out = F.scaled_dot_product_attention(q.transpose(1, 2), _heads(k, rep), _heads(v, rep), attn_mask=mask)
        return self.wo(out.transpose(1, 2).reshape(B, T, -1))


def _heads(x: torch.Tensor, rep: int) -> torch.Tensor:
    """(B, T, Hkv, D) -> (B, H, T, D) with each KV head repeated for its `rep` query heads."""
    return x.repeat_interleave(rep, dim=2).transpose(1, 2)


def _quantized_kv_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv: KVTransform, rep: int,
                            mask: torch.Tensor, start_pos: int) -> torch.Tensor:
    """Attention over a quantized cache, causal-exact: query p sees key t quantized only when the
    transform's `key_ready` says t's group was complete once position p was written, else in full
    precision (KIVI's residual), so a full-sequence pass scores exactly what decoding would."""
    kq, vq = kv(k, v)
    ready = kv.key_ready(start_pos, q.shape[1], k.shape[1])  # type: ignore[attr-defined]
    qh = q.transpose(1, 2)
    scale = 1.0 / math.sqrt(q.shape[-1])
    s = torch.where(ready, qh @ _heads(kq, rep).transpose(-1, -2), qh @ _heads(k, rep).transpose(-1, -2)) * scale
    p = torch.softmax(s.masked_fill(~mask, float("-inf")), dim=-1)
    return p @ _heads(vq, rep)


def _causal_mask(t_q: int, t_k: int, start_pos: int, device: torch.device) -> torch.Tensor:
    qpos = torch.arange(start_pos, start_pos + t_q, device=device)[:, None]
    return torch.arange(t_k, device=device)[None, :] <= qpos


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x) (Shazeer 2020)."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.w1 = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.w2 = nn.Linear(cfg.hidden_dim, cfg.dim, bias=False)
        self.w3 = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None,
                layer: int, start_pos: int, kv_transform: KVTransform | None) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), cos, sin, cache, layer, start_pos, kv_transform)
        return x + self.feed_forward(self.ffn_norm(x))


class Llama(nn.Module):
    """Llama-2-style decoder. `forward(tokens (B, T), start_pos, cache) -> logits (B, T, vocab)`.

    `kv_transform` (None = exact): a quantized KV cache (see `KVQuantizer`), applied to the keys
    and values each layer sees, so its cost can be evaluated without changing the weights.
    """

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tied_embeddings:
            self.output.weight = self.tok_embeddings.weight
        cos, sin = rope_tables(cfg, cfg.max_seq_len)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.kv_transform: KVTransform | None = None

    def forward(self, tokens: torch.Tensor, start_pos: int = 0, cache: KVCache | None = None) -> torch.Tensor:
        T = tokens.shape[1]
        if start_pos + T > self.cfg.max_seq_len:
            raise ConfigError(f"sequence of {start_pos + T} tokens exceeds max_seq_len {self.cfg.max_seq_len}")
        cos = self.rope_cos[start_pos:start_pos + T]
        sin = self.rope_sin[start_pos:start_pos + T]
        x = self.tok_embeddings(tokens)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, cache, i, start_pos, self.kv_transform)
        return self.output(self.norm(x))

    def num_params(self) -> int:
        """Distinct parameters (a tied classifier counts once)."""
        return sum(p.numel() for p in self.parameters())


def linear_names(model: Llama) -> list[str]:
    """Qualified names of the 7 Linear matrices of every block (the ones weight quantizers touch)."""
    names = []
    for i in range(model.cfg.n_layers):
        names += [f"layers.{i}.attention.{w}" for w in ("wq", "wk", "wv", "wo")]
        names += [f"layers.{i}.feed_forward.{w}" for w in ("w1", "w2", "w3")]
    return names


class KVCache:
    """Full-precision keys/values of shape (n_layers, B, max_seq_len, n_kv_heads, head_dim).

    Keys are stored after RoPE. `update` writes positions [start_pos, start_pos+T) and returns
    the prefix [0, start_pos+T) for attention.
    """

    def __init__(self, cfg: LlamaConfig, batch: int = 1, max_seq_len: int | None = None) -> None:
        n = max_seq_len or cfg.max_seq_len
        shape = (cfg.n_layers, batch, n, cfg.n_kv_heads, cfg.head_dim)
        self.k = torch.zeros(shape)
        self.v = torch.zeros(shape)

    def update(self, layer: int, start_pos: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        end = start_pos + k.shape[1]
        if end > self.k.shape[2]:
            raise ConfigError(f"KV cache holds {self.k.shape[2]} positions, asked to write up to {end}")
        self.k[layer, :, start_pos:end] = k
        self.v[layer, :, start_pos:end] = v
        return self.k[layer, :, :end], self.v[layer, :, :end]


