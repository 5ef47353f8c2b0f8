"""Text generation with the KV cache: greedy (temperature 0) or top-k sampling, seeded."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from devicefit.core import ConfigError

from ._model import KVCache, Llama
from ._tokenizer import Tokenizer

__all__ = ["Generation", "generate"]


@dataclass(frozen=True)
class Generation:
    """Prompt plus generated token ids (`ids`, starting with BOS) and their decoded `text`."""

    ids: list[int]
    text: str
    n_new: int


@torch.no_grad()
def generate(model: Llama, tokenizer: Tokenizer, prompt: str = "", max_new_tokens: int = 64,
             temperature: float = 0.0, top_k: int = 0, seed: int = 0) -> Generation:
    """Continue `prompt` (BOS prepended) for up to `max_new_tokens`, stopping at BOS/EOS or at the
    model's context. temperature 0 = greedy; else softmax(logits / temperature), top-k if > 0."""
    if max_new_tokens < 1 or temperature < 0 or top_k < 0:
        raise ConfigError(f"max_new_tokens must be >= 1, temperature and top_k >= 0; got "
                          f"{max_new_tokens}, {temperature}, {top_k}")
    ids = tokenizer.encode(prompt, bos=True) if prompt else [tokenizer.bos_id]
    limit = min(len(ids) + max_new_tokens, model.cfg.max_seq_len)
    if len(ids) >= limit:
        raise ConfigError(f"prompt of {len(ids)} tokens leaves no room in the {model.cfg.max_seq_len}-token context")
    gen = torch.Generator().manual_seed(seed)
    cache = KVCache(model.cfg, 1, limit)
    logits = model(torch.tensor([ids]), 0, cache)[0, -1]
    start = len(ids)
    while True:
        nxt = _pick(logits, temperature, top_k, gen)
        if nxt in (tokenizer.bos_id, tokenizer.eos_id):
            break
        ids.append(nxt)
        if len(ids) >= limit:
            break
        logits = model(torch.tensor([[nxt]]), len(ids) - 1, cache)[0, -1]
    return Generation(ids, tokenizer.decode(ids), len(ids) - start)


def _pick(logits: torch.Tensor, temperature: float, top_k: int, gen: torch.Generator) -> int:
    if temperature == 0:
        return int(logits.argmax())
    logits = logits.float() / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return int(torch.multinomial(torch.softmax(logits, -1), 1, generator=gen))
