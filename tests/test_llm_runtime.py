"""devicefit.llm beyond fake quantization: packed int4/int8 CPU kernels reproduce the dequantized
model, end-to-end scale tuning lowers the KL without touching codes, Wanda pruning hits its pattern."""

from __future__ import annotations

import pytest
import torch

from devicefit import llm
from devicefit.core import ConfigError, DataError


@pytest.fixture(scope="module")
def lm() -> llm.LoadedLM:
    torch.set_num_threads(1)
    return llm.load_lm("stories260K")


@pytest.fixture(scope="module")
def texts(lm: llm.LoadedLM) -> tuple[list[list[int]], list[list[int]]]:
    ev, ca = llm.split_eval_calib(llm.clean_stories(llm.load_stories()), 6, 8)
    return llm.encode_texts(lm.tokenizer, ev.texts, 128), llm.encode_texts(lm.tokenizer, ca.texts, 96)


@pytest.mark.parametrize(("fmt", "kernel"), [("int4-g32-asym", "int4pack"), ("q4_0", "int4pack"),
                                             ("int8-row-absmax", "int8pack")])
def test_packed_kernels_match_dequantized_model(lm: llm.LoadedLM, fmt: str, kernel: str) -> None:
    q = llm.quantize_llama(lm.model, llm.WeightQuantConfig(format=fmt, on_ragged="keep"))
    before = {n: qm.codes.clone() for n, qm in q.matrices.items() if qm is not None}
    p = llm.pack_llama(q)
    assert kernel in p.kernels.values()
    for name, kern in p.kernels.items():  # every runnable matrix is packed; the rest stay float
        fits = q.matrices[name] is not None and llm.KERNELS.get(kernel).supports(q.matrices[name])
        assert (kern == kernel) == fits
        assert isinstance(p.model.get_submodule(name), torch.nn.Linear) == (kern == "float")
    tok = torch.tensor([[1, 50, 300, 7, 99, 410, 3, 3, 200]])
    torch.testing.assert_close(p.model(tok), q.model(tok), atol=2e-4, rtol=1e-4)
    assert llm.model_bytes(p.model) < llm.model_bytes(q.model)
    assert all(torch.equal(before[n], q.matrices[n].codes) for n in before)  # q is not changed
    assert isinstance(q.model.get_submodule("layers.0.attention.wq"), torch.nn.Linear)


def test_unsupported_grids_stay_float(lm: llm.LoadedLM) -> None:
    p = llm.pack_llama(llm.quantize_llama(lm.model, llm.WeightQuantConfig(format="int3-g32-asym", on_ragged="keep")))
    assert set(p.kernels.values()) == {"float"}


def test_scale_tuning_lowers_kl_and_keeps_codes(lm: llm.LoadedLM, texts) -> None:  # type: ignore[no-untyped-def]
    ev, ca = texts
    cfg = llm.WeightQuantConfig(format="int4-g32-asym", on_ragged="ragged")
    q0 = llm.quantize_llama(lm.model, cfg)
    q1 = llm.quantize_llama(lm.model, llm.WeightQuantConfig(format="int4-g32-asym", on_ragged="ragged",
                                                            tune_epochs=3, tune_lr=5e-3), ca)
    for n, qm in q1.matrices.items():
        assert torch.equal(qm.codes, q0.matrices[n].codes)
        assert torch.equal(qm.d, qm.d.half().float())  # stored scales remain fp16 values
        torch.testing.assert_close(q1.model.get_submodule(n).weight, qm.dequantize())
    assert any("scales tuned" in note for note in q1.notes)
    kl0 = llm.score_lm(q0.model, ca, reference=lm.model).kl_nats
    kl1 = llm.score_lm(q1.model, ca, reference=lm.model).kl_nats
    assert kl1 < 0.8 * kl0
    held_out = [llm.score_lm(q.model, ev, reference=lm.model).kl_nats for q in (q1, q0)]
    assert held_out[0] < held_out[1]


def test_scale_tuning_needs_calibration(lm: llm.LoadedLM) -> None:
    with pytest.raises(ConfigError, match="calibration"):
        llm.quantize_llama(lm.model, llm.WeightQuantConfig(format="int4-g32-asym", on_ragged="ragged", tune_epochs=1))
    with pytest.raises(ConfigError, match="tune_epochs"):
        llm.WeightQuantConfig(tune_epochs=-1)


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_wanda_masks_follow_pattern(lm: llm.LoadedLM, texts, pattern: str) -> None:  # type: ignore[no-untyped-def]
    ev, ca = texts
    w0 = lm.model.layers[0].attention.wq.weight.clone()
    pr = llm.prune_llama(lm.model, llm.PruneConfig(pattern=pattern, sparsity=0.5), ca)
    assert torch.equal(lm.model.layers[0].attention.wq.weight, w0)  # input untouched
    assert pr.sparsity() == pytest.approx(0.5, abs=0.01)
    for name, keep in pr.masks.items():
        w = pr.model.get_submodule(name).weight
        assert torch.all(w[~keep] == 0)
        if pattern == "2:4":
            assert torch.all(keep.reshape(keep.shape[0], -1, 4).sum(-1) == 2)
        else:
            assert torch.all(keep.sum(1) == keep.shape[1] - int(keep.shape[1] * 0.5))
    fp = llm.score_lm(lm.model, ev).perplexity
    assert fp < llm.score_lm(pr.model, ev).perplexity < 100 * fp


def test_wanda_keeps_high_activation_columns(lm: llm.LoadedLM, texts) -> None:  # type: ignore[no-untyped-def]
    _, ca = texts
    wanda = llm.prune_llama(lm.model, llm.PruneConfig(score="wanda"), ca)
    mag = llm.prune_llama(lm.model, llm.PruneConfig(score="magnitude"), ca)
    name = "layers.0.attention.wq"
    assert not torch.equal(wanda.masks[name], mag.masks[name])  # the activation norm changes the choice
    a, keep = lm.model.get_submodule(name).weight.abs(), mag.masks[name]
    kept_min = torch.where(keep, a, torch.inf).amin(1)
    dropped_max = torch.where(keep, -torch.inf, a).amax(1)
    assert torch.all(kept_min >= dropped_max)  # magnitude keeps each row's largest weights


def test_prune_bad_input(lm: llm.LoadedLM) -> None:
    with pytest.raises(ConfigError, match="pattern"):
        llm.PruneConfig(pattern="4:2")
    with pytest.raises(ConfigError, match="sparsity"):
        llm.PruneConfig(sparsity=1.0)
    with pytest.raises(DataError, match="calib"):
        llm.prune_llama(lm.model, llm.PruneConfig(), [])
