"""LLM jobs behind `devicefit llm eval|quantize|generate`: load a model, quantize its weights
and/or KV cache as a format spec says, score it on held-out stories, time decoding, write GGUF."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from devicefit import llm
from devicefit.core import ConfigError, RunRecord, atomic_write_json, check_choice, machine_info, to_dict

__all__ = ["LLMJobConfig", "parse_format_spec", "run_llm_eval", "run_llm_generate", "run_llm_quantize"]

_METHOD_BITS = re.compile(r"^(rtn|gptq|awq|awq-gptq)-(\d)$")


@dataclass(frozen=True)
class LLMJobConfig:
    """One model in one format. `format`: `fp32`, a grid (`q8_0`, `q4_0`, `q4_1`, `q5_0`,
    `int4-g32-asym`, ...) quantized by round-to-nearest, or `<method>-<bits>` (`gptq-4`,
    `awq-4`, `awq-gptq-4`, `rtn-3`) on `int<bits>-g<group_size>-sym|asym`. `kv_bits` 0 = exact
    cache. Perplexity: the first `n_eval` clean stories below index 500, each with BOS, truncated
    to `context` tokens; calibration: the last `n_calib` clean stories from 500 on, `calib_len` tokens.
    `tune_epochs` > 0 tunes the stored scales/mins end to end on the calibration stories; `packed`
    times decoding with the packed int4/int8 CPU kernels (`llm.pack_llama`) instead of float weights."""

    model: str = "stories260K"
    format: str = "fp32"
    group_size: int = 32
    symmetric: bool = False
    on_ragged: str = "ragged"
    kv_bits: int = 0
    context: int = 256
    n_eval: int = 200
    n_calib: int = 128
    calib_len: int = 256
    text: str = "filter"
    speed_tokens: int = 32
    speed_repeats: int = 3
    threads: int = 1
    data_dir: str | None = None
    tune_epochs: int = 0
    packed: bool = False

    def __post_init__(self) -> None:
        parse_format_spec(self.format, self.group_size, self.symmetric, self.on_ragged)
        check_choice("text", self.text, ("filter", "repair", "keep"))
        if self.kv_bits and not 2 <= self.kv_bits <= 8:
            raise ConfigError(f"kv_bits must be 0 (exact) or 2..8, got {self.kv_bits}")
        if self.tune_epochs < 0:
            raise ConfigError(f"tune_epochs must be >= 0, got {self.tune_epochs}")
        for name in ("context", "n_calib", "calib_len", "threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")


def parse_format_spec(spec: str, group_size: int = 32, symmetric: bool = False,
                      on_ragged: str = "ragged") -> llm.WeightQuantConfig | None:
    """None for `fp32`; else the weight-quantization config the spec names."""
    key = spec.strip().lower()
    if key in ("fp32", "f32", "none"):
        return None
    m = _METHOD_BITS.match(key)
    if m:
        g = f"g{group_size}" if group_size else "row"
        grid = f"int{m.group(2)}-{g}-{'sym' if symmetric else 'asym'}"
        return llm.WeightQuantConfig(format=grid, method=m.group(1), on_ragged=on_ragged)
    return llm.WeightQuantConfig(format=key, method="rtn", on_ragged=on_ragged)


def _data(cfg: LLMJobConfig, lm: llm.LoadedLM) -> tuple[list[list[int]], list[list[int]], str]:
    corpus = llm.clean_stories(llm.load_stories(cfg.data_dir), cfg.text)
    ev, ca = llm.split_eval_calib(corpus, cfg.n_eval, cfg.n_calib)
    ctx = min(cfg.context, lm.model.cfg.max_seq_len)
    return (llm.encode_texts(lm.tokenizer, ev.texts, ctx, "evaluation stories"),
            llm.encode_texts(lm.tokenizer, ca.texts, min(cfg.calib_len, ctx), "calibration stories"), ev.source)


def _quantize(cfg: LLMJobConfig, lm: llm.LoadedLM, calib: list[list[int]]) -> tuple[Any, float]:
    qcfg = parse_format_spec(cfg.format, cfg.group_size, cfg.symmetric, cfg.on_ragged)
    if qcfg is None:
        return None, 0.0
    qcfg = replace(qcfg, tune_epochs=cfg.tune_epochs)
    t0 = time.perf_counter()
    needs = llm.QUANTIZERS.get(qcfg.method).needs_calibration or cfg.tune_epochs
    q = llm.quantize_llama(lm.model, qcfg, calib if needs else None)
    return q, time.perf_counter() - t0


def run_llm_eval(cfg: LLMJobConfig, lm: llm.LoadedLM | None = None) -> dict[str, Any]:
    """Perplexity, KL and top-1 vs the unquantized model, bits/weight, weight and KV bytes at
    `context`, decode tokens/s. Returns a JSON-able dict (config, metrics, machine)."""
    torch.set_num_threads(cfg.threads)
    lm = lm or llm.load_lm(cfg.model, cfg.data_dir)
    seqs, calib, source = _data(cfg, lm)
    q, quant_s = _quantize(cfg, lm, calib)
    model = q.model if q is not None else lm.model
    kv = llm.KVQuantConfig(bits=cfg.kv_bits) if cfg.kv_bits else None
    llm.set_kv_quant_(model, kv)
    try:
        score = llm.score_lm(model, seqs, reference=lm.model if (q is not None or kv) else None)
    finally:
        llm.set_kv_quant_(model, None)
    runner, kernels = model, {}
    if cfg.packed and q is not None:
        packed = llm.pack_llama(q)
        runner, kernels = packed.model, packed.kernels
    llm.set_kv_quant_(runner, kv)
    try:
        speed = llm.decode_speed(runner, new_tokens=cfg.speed_tokens, repeats=cfg.speed_repeats, threads=cfg.threads)
    finally:
        llm.set_kv_quant_(runner, None)
    ctx = min(cfg.context, lm.model.cfg.max_seq_len)
    matrices = q.matrices if q is not None else lm.matrices  # a GGUF file's own quantized tensors
    metrics = {**score.to_dict(),
               "bits_per_weight": llm.block_bits_per_weight(model, matrices),
               "weight_bytes": llm.weight_bytes(model, matrices),
               "kv_cache_bytes": llm.kv_cache_bytes(model.cfg, ctx, kv), "kv_context": ctx,
               "decode_tokens_per_s": speed.to_dict(), "quantize_s": quant_s,
               "decode_kernels": kernels, "decode_model_bytes": llm.model_bytes(runner),
               "notes": q.notes if q is not None else [], "eval_text": source}
    return {"config": to_dict(cfg), "metrics": metrics, "machine": machine_info()}


def run_llm_quantize(cfg: LLMJobConfig, out: str | Path) -> dict[str, Any]:
    """Quantize and write `out` (.gguf) plus `<out>.json` (config, bits/weight, bytes). The
    source file is never overwritten: an `out` that resolves to it is refused."""
    lm = llm.load_lm(cfg.model, cfg.data_dir)
    out = Path(out)
    if out.suffix != ".gguf":
        raise ConfigError(f"out must end in .gguf, got {str(out)!r}")
    if out.exists() and Path(lm.source).exists() and out.resolve() == Path(lm.source).resolve():
        raise ConfigError(f"out {str(out)!r} is the input model; quantization never overwrites its input")
    torch.set_num_threads(cfg.threads)
    _, calib, _ = _data(cfg, lm)
    q, quant_s = _quantize(cfg, lm, calib)
    llm.write_gguf(q if q is not None else lm.model, lm.tokenizer, out, name=f"{lm.name} {cfg.format}")
    metrics = {"bits_per_weight": q.bits_per_weight() if q is not None else 32.0, "file_bytes": out.stat().st_size,
               "quantize_s": quant_s, "notes": q.notes if q is not None else []}
    rec = RunRecord("llm_quantize", to_dict(cfg), metrics, {"gguf": out.name}, machine_info())
    atomic_write_json(out.with_suffix(".gguf.json"), rec.to_dict())
    return rec.to_dict()


def run_llm_generate(model: str, prompt: str = "", max_new_tokens: int = 64, temperature: float = 0.0,
                     top_k: int = 0, seed: int = 0, data_dir: str | None = None) -> llm.Generation:
    """Generate from a named model or a .bin/.gguf file (greedy by default)."""
    lm = llm.load_lm(model, data_dir)
    return llm.generate(lm.model, lm.tokenizer, prompt, max_new_tokens, temperature, top_k, seed)
