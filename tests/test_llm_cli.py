"""`devicefit llm eval|quantize|generate` end to end on the bundled stories260K."""

from __future__ import annotations

import json

import gguf
import pytest

import devicefit.cli._cmd_llm  # noqa: F401  (registers `llm` until the app imports it)
from devicefit.cli._app import main
from devicefit.pipelines._llm_job import LLMJobConfig, parse_format_spec


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict:
    assert main(["--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_generate_greedy(capsys: pytest.CaptureFixture[str]) -> None:
    r = _json(capsys, ["llm", "generate", "stories260K", "--max-new-tokens", "12"])
    assert r["text"] == "Once upon a time, there was a little girl" and r["n_new"] == 12


def test_eval_table_over_formats(capsys: pytest.CaptureFixture[str]) -> None:
    r = _json(capsys, ["llm", "eval", "stories260K", "--format", "fp32", "--format", "q8_0", "--format", "rtn-3",
                       "--n-eval", "3", "--context", "128", "--on-ragged", "keep"])
    fp, q8, r3 = (x["metrics"] for x in r["results"])
    assert fp["bits_per_weight"] == 32.0 and fp["kl_nats"] is None
    assert 8.5 < q8["bits_per_weight"] < 11 and q8["weight_bytes"] < fp["weight_bytes"] / 2
    assert q8["kl_nats"] < r3["kl_nats"] and q8["perplexity"] < r3["perplexity"]
    assert fp["kv_cache_bytes"] == 2 * 5 * 4 * 8 * 128 * 2  # fp16 cache at 128 tokens
    assert any("w2" in n for n in q8["notes"])  # w2 (172 columns) kept in fp16


def test_quantize_writes_gguf_and_never_overwrites_input(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s.gguf"
    r = _json(capsys, ["llm", "quantize", "stories260K", "--format", "q8_0", "--on-ragged", "keep", "--out", str(out)])
    assert r["metrics"]["file_bytes"] == out.stat().st_size and (tmp_path / "s.gguf.json").is_file()
    assert {t.tensor_type.name for t in gguf.GGUFReader(out).tensors} == {"Q8_0", "F16", "F32"}
    before = out.read_bytes()
    assert main(["llm", "quantize", str(out), "--format", "q4_0", "--on-ragged", "keep", "--out", str(out)]) == 2
    assert out.read_bytes() == before
    r = _json(capsys, ["llm", "eval", str(out), "--n-eval", "2", "--context", "64"])
    assert 8.5 < r["results"][0]["metrics"]["bits_per_weight"] < 11  # the file's own Q8_0 tensors


def test_bad_format_and_ragged_group_are_clear_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["llm", "eval", "stories260K", "--format", "q4_7"]) == 2
    assert "weight format 'q4_7'" in capsys.readouterr().err
    assert main(["llm", "eval", "stories260K", "--format", "rtn-4", "--on-ragged", "error", "--n-eval", "1"]) == 2
    assert "group_size 32 does not divide its row length 172" in capsys.readouterr().err


def test_format_specs() -> None:
    assert parse_format_spec("fp32") is None
    g = parse_format_spec("gptq-4", group_size=64, symmetric=True)
    assert (g.method, g.format) == ("gptq", "int4-g64-sym")
    assert parse_format_spec("awq-gptq-3").method == "awq-gptq"
    assert parse_format_spec("Q4_1").format == "q4_1"
    with pytest.raises(ValueError, match="kv_bits"):
        LLMJobConfig(kv_bits=1)


def test_eval_packed_kernels_and_tuning(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["llm", "eval", "stories260K", "--format", "rtn-4", "--n-eval", "2", "--context", "64", "--n-calib", "4"]
    plain = _json(capsys, argv)["results"][0]["metrics"]
    r = _json(capsys, [*argv, "--packed", "--tune-epochs", "2"])["results"][0]["metrics"]
    assert plain["decode_kernels"] == {} and "int4pack" in r["decode_kernels"].values()
    assert r["decode_model_bytes"] < plain["decode_model_bytes"]
    assert r["kl_nats"] != plain["kl_nats"] and any("scales tuned 2 epochs" in n for n in r["notes"])
    with pytest.raises(ValueError, match="tune_epochs"):
        LLMJobConfig(tune_epochs=-1)
