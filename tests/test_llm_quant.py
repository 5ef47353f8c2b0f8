"""devicefit.llm weight quantization: grids bit-exact with gguf.quants, RTN/GPTQ/AWQ over the
registry, GGUF export/import, KV-cache quantization and bad input."""

from __future__ import annotations

import gguf
import gguf.quants as gq
import numpy as np
import pytest
import torch

from devicefit import llm
from devicefit.core import ConfigError, DataError, NotFittedError, UnsupportedOpError


@pytest.fixture(scope="module")
def lm() -> llm.LoadedLM:
    torch.set_num_threads(1)
    return llm.load_lm("stories260K")


@pytest.fixture(scope="module")
def texts(lm: llm.LoadedLM) -> tuple[list[list[int]], list[list[int]]]:
    ev, ca = llm.split_eval_calib(llm.clean_stories(llm.load_stories()), 8, 8)
    return llm.encode_texts(lm.tokenizer, ev.texts, 256), llm.encode_texts(lm.tokenizer, ca.texts, 128)


def _matrix(rows: int = 48, cols: int = 256) -> np.ndarray:
    w = np.random.default_rng(0).standard_normal((rows, cols)).astype(np.float32)
    w[0, :32] = 0  # an all-zero block
    w[1, 40] = -7.5  # a block whose largest magnitude is negative
    w[2, 64:96] = 0.25  # a constant block
    return w


@pytest.mark.parametrize("fmt", sorted(llm.GRIDS.names()))
def test_gguf_blocks_bit_exact_with_reference(fmt: str) -> None:
    w = _matrix()
    qtype = gguf.GGMLQuantizationType[fmt.upper()]
    ref = gq.quantize(w, qtype)
    qm = llm.quantize_matrix(torch.from_numpy(w), llm.GRIDS.get(fmt))
    packed = llm.pack_matrix(qm, fmt)
    assert packed.dtype == np.uint8 and np.array_equal(packed, ref)
    assert np.array_equal(qm.dequantize().numpy(), gq.dequantize(ref, qtype))
    back = llm.unpack_matrix(ref, fmt, w.shape[1])
    assert torch.equal(back.codes, qm.codes) and torch.equal(back.dequantize(), qm.dequantize())


def test_bits_per_weight_of_gguf_formats() -> None:
    bpw = {n: llm.quantize_matrix(torch.zeros(2, 64), llm.GRIDS.get(n)).bits_per_weight for n in llm.GRIDS.names()}
    assert bpw == {"q8_0": 8.5, "q4_0": 4.5, "q4_1": 5.0, "q5_0": 5.5}


def test_rtn_error_shrinks_with_bits_and_groups() -> None:
    w = torch.from_numpy(_matrix())
    err = {f: float((llm.quantize_matrix(w, llm.parse_grid(f)).dequantize() - w).pow(2).mean())
           for f in ("int8-g32-asym", "int4-g32-asym", "int3-g32-asym", "int4-row-asym", "int4-g32-sym")}
    assert err["int8-g32-asym"] < err["int4-g32-asym"] < err["int3-g32-asym"]
    assert err["int4-g32-asym"] < err["int4-row-asym"]
    assert err["int4-g32-asym"] < err["int4-g32-sym"]  # a zero point fits shifted groups better


def test_group_size_must_divide_rows_unless_ragged() -> None:
    w = torch.randn(4, 172)
    with pytest.raises(ConfigError, match=r"w2.*group_size 32 does not divide its row length 172"):
        llm.quantize_matrix(w, llm.parse_grid("int4-g32-asym"), name="w2")
    qm = llm.quantize_matrix(w, llm.parse_grid("int4-g32-asym"), ragged=True)
    assert qm.bounds[-1] == (160, 172) and qm.d.shape == (4, 6)
    assert float((qm.dequantize() - w).abs().max()) < float(w.abs().max()) / 7
    with pytest.raises(ConfigError, match="weight format"):
        llm.parse_grid("int4-g32-wobbly")


def test_unfitted_quantizer_and_missing_calibration(lm: llm.LoadedLM) -> None:
    cfg = llm.WeightQuantConfig(method="gptq", on_ragged="ragged")
    with pytest.raises(NotFittedError):
        llm.GPTQQuantizer(cfg).transform(lm.model)
    with pytest.raises(ConfigError, match="calibration"):
        llm.quantize_llama(lm.model, cfg, [])
    with pytest.raises(ConfigError, match="on_ragged"):
        llm.WeightQuantConfig(on_ragged="pad")


def test_gptq_beats_rtn_on_its_own_objective() -> None:
    torch.manual_seed(0)
    x = torch.randn(512, 16) @ torch.randn(16, 64) + 0.1 * torch.randn(512, 64)  # correlated inputs
    w = torch.randn(32, 64)
    cfg = llm.WeightQuantConfig(format="int4-g32-asym", method="gptq", clip_search=False)
    from devicefit.llm._gptq import _hessian, gptq_matrix

    q_gptq = gptq_matrix(w, _hessian([x]), cfg, "w").dequantize()
    q_rtn = llm.quantize_matrix(w, cfg.grid).dequantize()
    assert float((x @ (q_gptq - w).T).pow(2).mean()) < 0.25 * float((x @ (q_rtn - w).T).pow(2).mean())


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(llm.QUANTIZERS.names()))
def test_every_quantizer_conforms(method: str, lm: llm.LoadedLM, texts) -> None:
    ev, calib = texts
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    cfg = llm.WeightQuantConfig(format="int4-g32-asym", method=method, on_ragged="ragged", max_calib_tokens=512)
    q = llm.quantize_llama(lm.model, cfg, calib)
    assert all(torch.equal(v, lm.model.state_dict()[k]) for k, v in before.items())  # input untouched
    assert set(q.matrices) == set(llm.linear_names(lm.model))
    for name, qm in q.matrices.items():  # every weight the copy runs with lies on the grid
        assert torch.equal(q.model.get_submodule(name).weight.detach(), qm.dequantize())
        assert int(qm.codes.max()) <= 15
    assert 5.0 < q.bits_per_weight() < 5.1
    base = llm.score_lm(lm.model, ev)
    s = llm.score_lm(q.model, ev, reference=lm.model)
    assert base.perplexity < s.perplexity < 1.15 * base.perplexity
    assert 0 < s.kl_nats < 0.2 and s.top1_agreement > 0.8
    assert llm.weight_bytes(q.model, q.matrices) < 0.3 * llm.weight_bytes(lm.model)


@pytest.mark.slow
def test_calibrated_methods_beat_rtn(lm: llm.LoadedLM, texts) -> None:
    ev, calib = texts
    cfg = llm.WeightQuantConfig(format="int3-g32-asym", on_ragged="ragged", max_calib_tokens=512)
    ppl = {m: llm.score_lm(llm.quantize_llama(lm.model, cfg.__class__(**{**cfg.__dict__, "method": m}), calib).model,
                           ev).perplexity for m in ("rtn", "gptq", "awq")}
    assert ppl["gptq"] < ppl["rtn"] and ppl["awq"] < ppl["rtn"]


def test_gguf_export_round_trip(tmp_path, lm: llm.LoadedLM) -> None:
    q = llm.quantize_llama(lm.model, llm.WeightQuantConfig(format="q4_0", on_ragged="keep"))
    path = llm.write_gguf(q, lm.tokenizer, tmp_path / "m.gguf")
    reader = gguf.GGUFReader(path)
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == "Q4_0" and types["blk.0.ffn_down.weight"] == "F16"
    assert types["token_embd.weight"] == "F32" and len(types) == 5 * 9 + 2
    model, tok, info = llm.load_gguf(path)
    ids = torch.tensor([lm.tokenizer.encode("The cat sat on the mat.")])
    with torch.no_grad():
        assert torch.equal(model(ids), q.model(ids))
    assert tok.encode("Lily ran home.") == lm.tokenizer.encode("Lily ran home.")
    assert torch.equal(info.matrices["layers.0.attention.wq"].codes, q.matrices["layers.0.attention.wq"].codes)


def test_gguf_bad_input(tmp_path, lm: llm.LoadedLM) -> None:
    q3 = llm.quantize_llama(lm.model, llm.WeightQuantConfig(format="int3-g32-asym", on_ragged="keep"))
    with pytest.raises(UnsupportedOpError, match=r"int3-g32-asym.*no GGUF type"):
        llm.write_gguf(q3, lm.tokenizer, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()
    (tmp_path / "junk.gguf").write_bytes(b"GGUF" + b"\x00" * 20)
    with pytest.raises(DataError, match=r"junk\.gguf"):
        llm.load_gguf(tmp_path / "junk.gguf")
    w = gguf.GGUFWriter(tmp_path / "gpt.gguf", "gpt2")
    w.add_tensor("x", np.zeros(4, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UnsupportedOpError, match="architecture 'gpt2'"):
        llm.load_gguf(tmp_path / "gpt.gguf")


def test_kv_quantization_error_memory_and_streaming(lm: llm.LoadedLM, texts) -> None:
    ev, _ = texts
    cfg = lm.model.cfg
    fp16 = llm.kv_cache_bytes(cfg, 256)
    assert fp16 == 2 * 5 * 4 * 8 * 256 * 2
    sizes = [llm.kv_cache_bytes(cfg, 256, llm.KVQuantConfig(bits=b)) for b in (8, 4, 2)]
    assert fp16 > sizes[0] > sizes[1] > sizes[2] > fp16 / 8
    base = llm.score_lm(lm.model, ev)
    kl = []
    for b in (8, 4, 2):
        llm.set_kv_quant_(lm.model, llm.KVQuantConfig(bits=b))
        try:
            kl.append(llm.score_lm(lm.model, ev, reference=None).loss_nats - base.loss_nats)
        finally:
            llm.set_kv_quant_(lm.model, None)
    assert abs(kl[0]) < 0.005 < kl[2] and kl[1] < kl[2]
    # streaming (cache, one token at a time) equals the full pass at the last position
    ids = torch.tensor([ev[0][:64]])
    llm.set_kv_quant_(lm.model, llm.KVQuantConfig(bits=2, key_group_tokens=16))
    try:
        with torch.no_grad():
            full = lm.model(ids)[0, -1]
            cache = llm.KVCache(cfg, 1, 64)
            lm.model(ids[:, :63], 0, cache)
            last = lm.model(ids[:, 63:], 63, cache)[0, -1]
    finally:
        llm.set_kv_quant_(lm.model, None)
    assert torch.allclose(full, last, atol=1e-4)


@pytest.mark.slow
def test_gptq_static_groups_stay_on_grid(lm: llm.LoadedLM, texts) -> None:
    ev, calib = texts
    cfg = llm.WeightQuantConfig(format="q4_1", method="gptq", static_groups=True, on_ragged="keep")
    q = llm.quantize_llama(lm.model, cfg, calib[:4])
    wq = q.matrices["layers.0.attention.wq"]
    assert torch.equal(q.model.get_submodule("layers.0.attention.wq").weight.detach(), wq.dequantize())
    assert q.matrices["layers.0.feed_forward.w2"] is None  # 172 columns: kept in fp16
    assert llm.score_lm(q.model, ev).perplexity < 1.15 * llm.score_lm(lm.model, ev).perplexity
