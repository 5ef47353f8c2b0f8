"""The compress job and the `prune` / `quantize` / `distill` commands: a new run directory with a before/after
record, the source never modified, cached reruns, and clear errors for bad sources."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import devicefit.cli._cmd_compress  # noqa: F401  (registers prune/quantize/distill until _app imports it)
from devicefit.cli import main
from devicefit.compress import PruneConfig
from devicefit.core import ConfigError, DataError, sha256_file
from devicefit.models import build
from devicefit.pipelines._compress_job import CompressJobConfig, load_source, run_compress_job
from devicefit.train import TrainConfig, load_weights

FAST = ["--set", "latency_repeats=5", "--set", "latency_rounds=1", "--set", "n_calibration=32"]


@pytest.fixture(scope="module")
def source(make_source_run: Callable[..., Path]) -> Path:
    """A 'trained' run directory: spec.json + model.pt of a narrow ResNet-8 (random weights)."""
    return make_source_run("resnet8", width_mult=0.5)


def _hashes(run: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(run.iterdir())}


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(["--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_quantize_command_writes_an_int8_run_with_before_after_and_leaves_the_source(
        source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _hashes(source)
    out = tmp_path / "q"
    m = _cli(capsys, "quantize", str(source), "--run-dir", str(out), "--calibrator", "percentile", *FAST)
    assert _hashes(source) == before
    assert (out / "model.onnx").stat().st_size < 0.5 * m["before"]["onnx_bytes"]  # names and scales cost extra
    assert m["after"]["onnx_bytes"] == (out / "model.onnx").stat().st_size
    assert m["details"]["runtime_ops"].get("QLinearConv", 0) > 0
    assert m["before"]["macs"] == m["after"]["macs"] > 0
    assert 0 <= m["after"]["accuracy"] <= 1 and m["after_latency_ms"] > 0
    assert set(m["source_sha256"].values()) <= set(before.values())
    again = _cli(capsys, "quantize", str(source), "--run-dir", str(out), "--calibrator", "percentile", *FAST)
    assert again["cached"] is True and again["after"] == m["after"]


def test_prune_job_removes_channels_and_its_weights_reload(source: Path, tmp_path: Path) -> None:
    cfg = CompressJobConfig(source=str(source), method="prune", run_dir=str(tmp_path / "p"), no_finetune=True,
                            latency_repeats=5, latency_rounds=1)
    m = run_compress_job(cfg)
    assert m["after"]["macs"] < 0.75 * m["before"]["macs"]  # 16-channel layers round to multiples of 8
    assert m["after"]["params"] < m["before"]["params"]
    reloaded = load_source(CompressJobConfig(source=str(tmp_path / "p"), run_dir="unused"))
    assert sum(p.numel() for p in reloaded.model.parameters()) == m["after"]["params"]


def test_round_to_auto_follows_the_targets_channel_multiple(source: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """`--set prune.round_to=auto` prunes to this CPU's multiple (recorded in the details; every kept count of a
    pruned convolution is a multiple of it); a target with no known multiple is refused before any work."""
    from devicefit.hardware import channel_floor, channel_multiple

    out = tmp_path / "auto"
    m = _cli(capsys, "prune", str(source), "--run-dir", str(out), "--ratio", "0.3", "--set", "no_finetune=true",
             "--set", "prune.round_to=auto", *FAST)
    want, floor = channel_multiple("host-ort"), channel_floor("host-ort")
    assert m["details"]["round_to"] == want and m["details"]["round_floor"] == floor
    assert json.loads((out / "config.json").read_text())["config"]["prune"]["round_to"] == "auto"
    after = {k: v[0] for k, v in json.loads((out / "shapes.json").read_text()).items() if len(v) == 4}
    before = {k: v.shape[0] for k, v in load_source(CompressJobConfig(source=str(source), run_dir="unused"))
              .model.state_dict().items() if v.dim() == 4}
    changed = [k for k in after if after[k] != before[k]]
    # kept counts: multiples of the block, or of the floor below one block (AVX-512: 8)
    assert changed and all(after[k] % want == 0 or (floor and after[k] < want and after[k] % floor == 0)
                           for k in changed)
    with pytest.raises(ConfigError, match="measure_latency runs on host targets"):
        CompressJobConfig(source=str(source), run_dir=str(tmp_path / "m"), method="prune", target="cortex-m4-256k",
                          prune=PruneConfig(round_to="auto"))
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_finetune_method_is_the_unpruned_control(source: Path, tmp_path: Path) -> None:
    """method 'finetune': the source trained on with the fine-tune recipe, same shapes, weights changed, the
    source untouched, checkpointed; it refuses no_finetune."""
    before = _hashes(source)
    ft = TrainConfig(epochs=1, lr=0.01, warmup_epochs=0.0, batch_size=128, threads=1)
    cfg = CompressJobConfig(source=str(source), method="finetune", run_dir=str(tmp_path / "c"), finetune=ft,
                            latency_repeats=5, latency_rounds=1)
    m = run_compress_job(cfg)
    out = tmp_path / "c"
    assert _hashes(source) == before
    assert m["details"] == {"epochs": 1, "checkpoint_dir": "finetune"} and (out / "finetune" / "checkpoint.pt").exists()
    assert m["after"]["macs"] == m["before"]["macs"] and m["after"]["params"] == m["before"]["params"]
    src = torch.load(source / "model.pt", weights_only=True)
    new = torch.load(out / "model.pt", weights_only=True)
    assert {k: v.shape for k, v in src.items()} == {k: v.shape for k, v in new.items()}
    assert any(not torch.equal(src[k], new[k]) for k in src if src[k].is_floating_point())
    with pytest.raises(ConfigError, match="no_finetune must be false"):
        run_compress_job(CompressJobConfig(source=str(source), method="finetune", run_dir=str(tmp_path / "n"),
                                           no_finetune=True))


@pytest.mark.slow
def test_final_finetune_is_recorded_checkpointed_and_resumes_without_pruning_again(source: Path,
                                                                                   tmp_path: Path) -> None:
    ft = TrainConfig(epochs=1, lr=0.01, warmup_epochs=0.0, batch_size=128, threads=1)
    cfg = CompressJobConfig(source=str(source), method="prune", run_dir=str(tmp_path / "f"), finetune=ft,
                            final_epochs=1, final_lr=0.02, latency_repeats=5, latency_rounds=1)
    m = run_compress_job(cfg)
    out = tmp_path / "f"
    assert m["details"]["final_finetune"]["epochs"] == 1 and m["details"]["final_finetune"]["lr"] == 0.02
    # the final fine-tune ran at final_lr, the per-step fine-tune at finetune.lr
    assert "final fine-tune: 1 epochs, lr 0.02" in (out / "log.txt").read_text()
    assert json.loads((out / "final_finetune" / "train.json").read_text())["config"]["lr"] == 0.02
    assert (out / "final_finetune" / "checkpoint.pt").exists() and (out / "pruned.pt").exists()
    pruned = torch.load(out / "pruned.pt", weights_only=True)
    final = torch.load(out / "model.pt", weights_only=True)
    assert {k: v.shape for k, v in pruned.items()} == {k: v.shape for k, v in final.items()}
    assert any(not torch.equal(pruned[k], final[k]) for k in pruned)  # the final epoch trained the weights
    # a job killed during the final fine-tune: the stash is loaded, the channels are not pruned again
    (out / "compress.json").unlink()
    again = run_compress_job(cfg)
    assert "resuming: pruning finished earlier" in (out / "log.txt").read_text()
    assert again["after"]["params"] == m["after"]["params"]
    assert again["details"]["macs_ratio"] == m["details"]["macs_ratio"] > 1


def test_final_epochs_needs_pruning_with_finetuning(source: Path) -> None:
    with pytest.raises(ConfigError, match="final_epochs=2 fine-tunes after pruning"):
        CompressJobConfig(source=str(source), run_dir="o", method="quantize", final_epochs=2)
    with pytest.raises(ConfigError, match="final_epochs=2 fine-tunes after pruning"):
        CompressJobConfig(source=str(source), run_dir="o", method="prune", no_finetune=True, final_epochs=2)
    with pytest.raises(ConfigError, match="final_epochs must be an int >= 0"):
        CompressJobConfig(source=str(source), run_dir="o", method="prune", final_epochs=-1)
    with pytest.raises(ConfigError, match=r"final_lr=0\.1 is the final fine-tune's learning rate: it "
                                          r"needs final_epochs > 0"):
        CompressJobConfig(source=str(source), run_dir="o", method="prune", final_lr=0.1)
    with pytest.raises(ConfigError, match="final_lr"):
        CompressJobConfig(source=str(source), run_dir="o", method="prune", final_epochs=2, final_lr=0.0)
    with pytest.raises(ConfigError, match="final_lr must be a number > 0 or 'source'"):
        CompressJobConfig(source=str(source), run_dir="o", method="prune", final_epochs=2, final_lr="fast")


def test_final_lr_source_is_the_rate_the_source_was_trained_with(source: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from devicefit.core import to_dict
    from devicefit.pipelines._compress_job import _final_lr
    from devicefit.pipelines._train_job import TrainJobConfig

    cfg = CompressJobConfig(source=str(source), run_dir="o", method="prune", final_epochs=2, final_lr="source")
    assert load_source(cfg).train_lr is None  # spec.json + model.pt only: no training record
    with pytest.raises(ConfigError, match="final_lr='source' uses the learning rate the source was trained with"):
        _final_lr(cfg, load_source(cfg))
    run = tmp_path / "trained"
    shutil.copytree(source, run)
    stamp = {"kind": "train", "config": to_dict(TrainJobConfig(train=TrainConfig(lr=0.07)))}
    (run / "config.json").write_text(json.dumps(stamp))
    trained = CompressJobConfig(source=str(run), run_dir="o", method="prune", final_epochs=2, final_lr="source")
    src = load_source(trained)
    assert src.train_lr == 0.07 and _final_lr(trained, src) == 0.07
    assert _final_lr(CompressJobConfig(source=str(run), run_dir="o", method="prune", final_epochs=2, final_lr=0.3),
                     src) == 0.3
    assert _final_lr(CompressJobConfig(source=str(run), run_dir="o", method="prune", final_epochs=2,
                                       finetune=TrainConfig(lr=0.004)), src) == 0.004
    # the job refuses before pruning anything
    assert main(["prune", str(source), "--run-dir", str(tmp_path / "x"), "--final-epochs", "1", "--final-lr",
                 "source", *FAST]) == 2
    assert "final_lr='source'" in capsys.readouterr().err and not (tmp_path / "x" / "pruned.pt").exists()
    with pytest.raises(SystemExit):
        main(["prune", str(source), "--run-dir", str(tmp_path / "y"), "--final-lr", "fast"])
    assert "expected a learning rate or 'source', got 'fast'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="max_step_ratio"):
        CompressJobConfig(source=str(source), run_dir="o", method="prune", speedup=2.0, max_step_ratio=1.5)


def test_a_checkpoint_file_needs_its_spec(source: Path, tmp_path: Path) -> None:
    weights = tmp_path / "w.pt"
    weights.write_bytes((source / "model.pt").read_bytes())
    with pytest.raises(ConfigError, match="spec"):
        load_source(CompressJobConfig(source=str(weights), run_dir=str(tmp_path / "o")))
    src = load_source(CompressJobConfig(source=str(weights), spec=str(source / "spec.json"), run_dir="o"))
    ref = build(src.spec)
    load_weights(ref, source / "model.pt")
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), src.model.state_dict().values(),
                                                 strict=True))


def test_bad_sources_and_run_dirs_are_clear_errors(source: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_source(CompressJobConfig(source=str(tmp_path / "nope"), run_dir="o"))
    with pytest.raises(ConfigError, match="inside the source"):
        run_compress_job(CompressJobConfig(source=str(source), run_dir=str(source / "out")))
    with pytest.raises(ConfigError, match="compress method"):
        CompressJobConfig(source=str(source), run_dir="o", method="sparsify")
    assert not (source / "out").exists()


def test_cli_bad_ratio_exits_2_naming_the_parameter(source: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prune", str(source), "--run-dir", str(tmp_path / "x"), "--ratio", "1.5"]) == 2
    assert "ratio" in capsys.readouterr().err
    assert main(["prune", str(source), "--run-dir", str(tmp_path / "x"), "--speedup", "0.8"]) == 2
    assert "speedup must be a number > 1" in capsys.readouterr().err
    assert main(["prune", str(source), "--run-dir", str(tmp_path / "x"), "--speedup", "2", "--latency-ms", "1"]) == 2
    assert "give exactly one goal: latency_ms or speedup" in capsys.readouterr().err
    assert main(["prune", str(source), "--run-dir", str(tmp_path / "x"), "--speedup", "2", "--tolerance", "0.7"]) == 2
    assert "tolerance must be a number in [0, 0.5), got 0.7" in capsys.readouterr().err
    assert main(["prune", str(source), "--run-dir", str(tmp_path / "x"), "--final-lr", "0.1"]) == 2
    assert "final_lr=0.1 is the final fine-tune's learning rate: it needs final_epochs > 0" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_distill_trains_a_narrower_student_against_the_source(source: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    m = _cli(capsys, "distill", str(source), "--run-dir", str(tmp_path / "d"), "--width-mult", "0.25",
             "--epochs", "1", "--set", "finetune.threads=1", *FAST)
    assert m["after"]["params"] < m["before"]["params"]
    assert json.loads((tmp_path / "d" / "spec.json").read_text())["params"]["width_mult"] == 0.25


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # few repeats on a shared CPU: spread warnings expected
def test_latency_driven_prune_job_records_every_measured_round(source: Path, tmp_path: Path) -> None:
    cfg = CompressJobConfig(source=str(source), method="prune", run_dir=str(tmp_path / "l"), no_finetune=True,
                            latency_ms=1e-3, latency_repeats=5, latency_rounds=1)
    m = run_compress_job(cfg)
    rounds = m["details"]["history"]
    assert m["details"]["reached"] is False and len(rounds) >= 2
    assert m["details"]["stopped"] is None or "removes anything more" in m["details"]["stopped"]
    assert rounds[-1]["macs"] == m["after"]["macs"] < m["before"]["macs"]
    # the job's timing settings reach every round, not only the before/after timing
    assert m["details"]["method"].startswith("each round: pruned and unpruned timed in 1 interleaved rounds x 5 runs")
    assert all(len(ms) == 1 for r in rounds for ms in r["rounds_ms"].values())
