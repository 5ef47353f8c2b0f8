"""devicefit.llm: the Llama module, llama2.c loader, tokenizers, text and evaluation."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import torch

from devicefit import llm
from devicefit.core import ConfigError, DataError

# llama2.c doc/stories260K.md: the sample printed for greedy decoding from BOS (its start).
PUBLISHED_SAMPLE = ("Once upon a time, there was a little girl named Lily. She loved to play outside in the park. "
                    "One day, she saw a big, red ball. She wanted to play with it, but it was too high.\n"
                    "Lily's mom said, \"Lily, let's go to the park.\"")


@pytest.fixture(scope="module")
def lm() -> llm.LoadedLM:
    torch.set_num_threads(1)
    return llm.load_lm("stories260K")


def test_greedy_decoding_reproduces_published_sample(lm: llm.LoadedLM) -> None:
    g = llm.generate(lm.model, lm.tokenizer, max_new_tokens=90)
    assert g.text.startswith(PUBLISHED_SAMPLE)
    assert g.ids[0] == lm.tokenizer.bos_id and g.n_new == 90


def test_model_shape_and_params(lm: llm.LoadedLM) -> None:
    cfg = lm.model.cfg
    shape = (cfg.dim, cfg.hidden_dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.vocab_size)
    assert shape == (64, 172, 5, 8, 4, 512)
    assert lm.model.num_params() == 260_032  # tied classifier counted once
    assert len(llm.linear_names(lm.model)) == 35


@torch.no_grad()
def test_cached_decoding_matches_full_forward(lm: llm.LoadedLM) -> None:
    ids = lm.tokenizer.encode("Tom had a red car. He liked to drive it fast.")
    full = lm.model(torch.tensor([ids]))[0]
    cache = llm.KVCache(lm.model.cfg, 1, len(ids))
    steps = [lm.model(torch.tensor([ids[:5]]), 0, cache)[0]]
    steps += [lm.model(torch.tensor([[t]]), 5 + i, cache)[0] for i, t in enumerate(ids[5:])]
    assert torch.allclose(torch.cat(steps), full, atol=1e-4)


def test_tokenizer_round_trip_and_byte_fallback(lm: llm.LoadedLM) -> None:
    tok = lm.tokenizer
    text = "Once upon a time, Lily saw a café and a \u65e5 sign."
    ids = tok.encode(text)
    assert ids[0] == 1 and tok.decode(ids) == text
    # U+65E5 has no piece: its UTF-8 bytes E6 97 A5 fall back to ids byte + 3
    assert [i for i in ids if 3 <= i < 259] == [0xE6 + 3, 0x97 + 3, 0xA5 + 3]
    assert tok.encode("Once upon a time")[:4] == [1, 403, 407, 261]


def test_truncated_and_corrupt_checkpoints_name_the_file(tmp_path, lm: llm.LoadedLM) -> None:
    raw = Path(lm.source).read_bytes()
    cut = tmp_path / "cut.bin"
    cut.write_bytes(raw[:-100])
    with pytest.raises(DataError, match=r"cut\.bin.*truncated"):
        llm.load_llama2c(cut)
    bad = tmp_path / "bad.bin"
    bad.write_bytes(struct.pack("<7i", 64, 172, 5, 8, 3, 512, 512) + raw[28:])
    with pytest.raises(DataError, match=r"bad\.bin"):
        llm.load_llama2c(bad)
    with pytest.raises(DataError, match="header"):
        (tmp_path / "tiny.bin").write_bytes(b"\x00" * 10)
        llm.load_llama2c(tmp_path / "tiny.bin")


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="n_heads"):
        llm.LlamaConfig(dim=64, hidden_dim=8, n_layers=1, n_heads=6, n_kv_heads=4, vocab_size=8, max_seq_len=8)
    with pytest.raises(ConfigError, match="max_seq_len"):
        llm.LlamaConfig(dim=8, hidden_dim=8, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=8, max_seq_len=0)


def test_stories_cleaning_and_split() -> None:
    corpus = llm.load_stories()
    ev, ca = llm.split_eval_calib(llm.clean_stories(corpus, "filter"), 10, 5)
    assert len(ev.texts) == 10 and max(ev.indices) < 500
    assert len(ca.texts) == 5 and min(ca.indices) >= 500 and not set(ev.indices) & set(ca.indices)
    garbled = "He said \u00e2\u20ac\u0153hi\u00e2\u20ac and didn\u00e2\u20ac\u2122t stay."
    moj = llm.Corpus((garbled, "plain"), (443, 1), "t")
    assert llm.clean_stories(moj, "filter").texts == ("plain",)
    assert llm.clean_stories(moj, "repair").texts[0] == 'He said "hi" and didn\'t stay.'


def test_empty_calibration_text_is_an_error(lm: llm.LoadedLM) -> None:
    with pytest.raises(DataError, match="calibration"):
        llm.encode_texts(lm.tokenizer, ["", "   "], 64, "calibration stories")


def test_perplexity_on_bundled_stories(lm: llm.LoadedLM) -> None:
    ev, _ = llm.split_eval_calib(llm.clean_stories(llm.load_stories()), 16, 0)
    seqs = llm.encode_texts(lm.tokenizer, ev.texts, 512)
    s = llm.score_lm(lm.model, seqs)
    # the published validation loss is 1.2968; stories 0-15 of the same split score close to it
    assert 1.1 < s.loss_nats < 1.5 and s.n_tokens == sum(len(x) - 1 for x in seqs)
    same = llm.score_lm(lm.model, seqs, reference=lm.model)
    assert same.kl_nats == pytest.approx(0.0, abs=1e-6) and same.top1_agreement == 1.0
    cached = llm.score_lm(lm.model, seqs, reference=llm.reference_logprobs(lm.model, seqs))
    assert cached.kl_nats == pytest.approx(0.0, abs=1e-6) and cached.loss_nats == s.loss_nats
    # batching with right padding must not change the figure
    assert llm.score_lm(lm.model, seqs, batch_size=1).loss_nats == pytest.approx(s.loss_nats, rel=1e-5)


def test_decode_speed_is_a_measurement(lm: llm.LoadedLM) -> None:
    m = llm.decode_speed(lm.model, prompt_len=4, new_tokens=8, repeats=2)
    assert m.unit == "tokens/s" and m.value > 0 and m.method["threads"] == 1 and "p10" in m.spread
    with pytest.raises(ConfigError, match="max_seq_len"):
        llm.decode_speed(lm.model, prompt_len=500, new_tokens=100)
