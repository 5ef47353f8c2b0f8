"""Language-model evaluation: perplexity on held-out token sequences, KL divergence and top-1
agreement against a reference model, decode speed (tokens/s) and weight/KV-cache memory."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from devicefit.core import ConfigError, DataError, Measurement, machine_info
from devicefit.hardware import summarize_samples

from ._model import KVCache, Llama

__all__ = ["LMScore", "decode_speed", "reference_logprobs", "score_lm"]


@dataclass(frozen=True)
class LMScore:
    """Mean next-token NLL (`loss_nats`) and `perplexity` = exp(loss) over `n_tokens` predictions;
    with a reference, `kl_nats` = mean KL(reference || model) and `top1_agreement` in [0, 1]."""

    loss_nats: float
    perplexity: float
    n_tokens: int
    n_sequences: int
    kl_nats: float | None = None
    top1_agreement: float | None = None

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def _batches(seqs: list[list[int]], batch_size: int):  # type: ignore[no-untyped-def]
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))  # similar lengths pad little
    for s in range(0, len(order), batch_size):
        yield pad_batch([seqs[i] for i in order[s:s + batch_size]])


def pad_batch(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens (B, T) zero-padded, valid (B, T - 1): True where position t predicts a real token t + 1)."""
    T = max(map(len, seqs))
    tok = torch.zeros(len(seqs), T, dtype=torch.long)
    valid = torch.zeros(len(seqs), T - 1, dtype=torch.bool)
    for r, ids in enumerate(seqs):
        tok[r, :len(ids)] = torch.tensor(ids)
        valid[r, :len(ids) - 1] = True
    return tok, valid


@torch.no_grad()
def reference_logprobs(reference: Llama, seqs: list[list[int]], batch_size: int = 16) -> list[torch.Tensor]:
    """Log-probabilities of `reference` on `seqs` per batch (float32), to pass as `score_lm(reference=)`
    when many models are compared with one reference: it then runs once, not once per model."""
    return [F.log_softmax(reference(tok)[:, :-1].float(), -1)[valid] for tok, valid in _batches(seqs, batch_size)]


@torch.no_grad()
def score_lm(model: Llama, seqs: list[list[int]], reference: Llama | list[torch.Tensor] | None = None,
             batch_size: int = 16) -> LMScore:
    """Score `model` on `seqs` (each starts with BOS; every later token is predicted from its prefix).

    Right padding never affects real positions under the causal mask, and padded targets are
    skipped. Loss is pooled per token over all sequences. `reference`: a model, or its
    `reference_logprobs` for the same `seqs` and `batch_size`.
    """
    if not seqs or any(len(s) < 2 for s in seqs):
        raise DataError("seqs: expected at least one sequence, each of >= 2 tokens")
    nll = kl = agree = 0.0
    n = 0
    for b, (tok, valid) in enumerate(_batches(seqs, batch_size)):
        logp = F.log_softmax(model(tok)[:, :-1].float(), -1)[valid]
        tgt = tok[:, 1:][valid]
        nll += float(-logp.gather(-1, tgt[:, None]).sum())
        n += int(valid.sum())
        if reference is not None:
            ref = (F.log_softmax(reference(tok)[:, :-1].float(), -1)[valid] if isinstance(reference, Llama)
                   else reference[b])
            kl += float((ref.exp() * (ref - logp)).sum())
            agree += float((ref.argmax(-1) == logp.argmax(-1)).sum())
    loss = nll / n
    return LMScore(loss, math.exp(loss), n, len(seqs),
                   kl / n if reference is not None else None, agree / n if reference is not None else None)


@torch.no_grad()
def decode_speed(model: Llama, *, prompt_len: int = 16, new_tokens: int = 64, repeats: int = 5,
                 warmup: int = 1, threads: int = 1) -> Measurement:
    """Greedy decoding throughput in tokens/s with a KV cache (eager PyTorch, batch 1).

    Each repeat prefills `prompt_len` tokens then decodes `new_tokens` one at a time; the figure
    is new_tokens / decode time, median over `repeats` with p10/p90/cv. Sets torch's thread count.
    """
    if prompt_len < 1 or new_tokens < 1 or repeats < 1:
        raise ConfigError(f"prompt_len, new_tokens and repeats must be >= 1, got {prompt_len}, {new_tokens}, {repeats}")
    if prompt_len + new_tokens > model.cfg.max_seq_len:
        raise ConfigError(f"prompt_len + new_tokens = {prompt_len + new_tokens} exceeds "
                          f"max_seq_len {model.cfg.max_seq_len}")
    torch.set_num_threads(threads)
    prompt = torch.arange(prompt_len)[None] % model.cfg.vocab_size
    rates = []
    for r in range(warmup + repeats):
        cache = KVCache(model.cfg, 1, prompt_len + new_tokens)
        nxt = model(prompt, 0, cache)[:, -1:].argmax(-1)
        t0 = time.perf_counter()
        for pos in range(prompt_len, prompt_len + new_tokens):
            nxt = model(nxt, pos, cache)[:, -1:].argmax(-1)
        if r >= warmup:
            rates.append(new_tokens / (time.perf_counter() - t0))
    st = summarize_samples(rates, max_cv=0.1)
    return Measurement("decode_tokens_per_s", st.median, "tokens/s",
                       method={"runtime": f"torch {torch.__version__} eager", "threads": threads, "batch": 1,
                               "prompt_len": prompt_len, "new_tokens": new_tokens, "warmup": warmup,
                               "repeats": repeats, "statistic": "median"},
                       spread={"p10": st.p10, "p90": st.p90, "cv": st.cv}, machine=machine_info())
