"""`devicefit search` and the search job on the bundled NB201 slice: JSON record of every candidate, resume,
infeasible budgets, targets of another space."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import devicefit.cli._cmd_search  # noqa: F401  (registers the command until the CLI imports it)
from devicefit.cli import main
from devicefit.core import BudgetError, ConfigError, DataError
from devicefit.pipelines._search_job import SearchJobConfig, device_column, run_search_job, tabular_problem


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(["--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_records_every_candidate_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    problem = tabular_problem("nb201", "gold_6226")
    lat = sorted(problem.latency_ms[s] for s in problem.accuracy)
    budget = lat[len(lat) // 2]
    out = tmp_path / "s.json"
    args = ["search", "--space", "nb201", "--target", "nb201-gold-6226", "--latency-ms", str(budget),
            "--method", "random", "--n-trials", "8", "--out", str(out)]
    res = run_json(capsys, *args)
    record = json.loads(out.read_text())
    assert record["n_evaluated"] == 8 and len(record["evaluated"]) == 8
    for e in record["evaluated"]:  # each candidate with its looked-up metrics
        from devicefit.core import ArchSpec

        spec = ArchSpec.from_dict(e["spec"])
        assert e["metrics"] == {"accuracy": problem.accuracy[spec], "latency_ms": problem.latency_ms[spec]}
        assert e["feasible"] == (e["metrics"]["latency_ms"] <= budget)
    best = max((e for e in record["evaluated"] if e["feasible"]), key=lambda e: e["metrics"]["accuracy"])
    assert res["best"]["metrics"] == best["metrics"]
    assert res["oracle"]["latency_ms"] <= budget and res["gap_to_oracle"] >= 0
    assert Path(res["storage"]).is_file()
    # a larger budget reuses the stored study: the first 8 candidates are the same
    more = run_json(capsys, *args[:-4], "--n-trials", "12", "--out", str(out))
    assert more["n_evaluated"] == 12
    again = json.loads(out.read_text())["evaluated"]
    assert [e["spec"] for e in again[:8]] == [e["spec"] for e in record["evaluated"]]


def test_cli_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "--target", "nb201-gold-6226", "--latency-ms", "1e-6", "--out",
                 str(tmp_path / "x.json")]) == 2
    assert "is infeasible: the smallest architecture of the space reaches" in capsys.readouterr().err
    assert main(["search", "--target", "fbnet-raspi4", "--latency-ms", "5", "--out", str(tmp_path / "y.json")]) == 2
    assert "measures the fbnet space, not 'nb201'" in capsys.readouterr().err
    assert main(["search", "--target", "nb201-gold-6226", "--latency-ms", "5", "--method", "nope"]) == 2
    assert "unknown search method 'nope'" in capsys.readouterr().err
    assert main(["search", "--space", "mbconv", "--target", "nb201-gold-6226", "--latency-ms", "1", "--method",
                 "random", "--out", str(tmp_path / "z.json")]) == 2
    assert "a supernet search measures latency on a host target" in capsys.readouterr().err
    assert main(["search", "--space", "mbconv", "--target", "host-ort", "--latency-ms", "1", "--method",
                 "random", "--option", "oops", "--out", str(tmp_path / "z.json")]) == 2
    assert "--option takes KEY=VALUE, got 'oops'" in capsys.readouterr().err
    assert main(["search", "--space", "mbconv", "--target", "host-ort", "--latency-ms", "1", "--method",
                 "random", "--path-sampling", "zigzag", "--out", str(tmp_path / "z.json")]) == 2
    assert "path_sampling must be one of sandwich, uniform, got 'zigzag'" in capsys.readouterr().err
    assert main(["search", "--space", "mbconv", "--target", "host-ort", "--latency-ms", "1", "--method",
                 "random", "--retrain-top", "3", "--out", str(tmp_path / "z.json")]) == 2
    assert "retrain_top 3 picks among networks trained from scratch: set retrain_epochs > 0" in capsys.readouterr().err
    assert main(["search", "--space", "mbconv", "--target", "host-ort", "--latency-ms", "1", "--method",
                 "random", "--retrain-top", "0", "--retrain-epochs", "1", "--out", str(tmp_path / "z.json")]) == 2
    assert "retrain_top" in capsys.readouterr().err
    assert main(["search", "--space", "mbconv", "--target", "host-ort", "--latency-ms", "1", "--method",
                 "lightnas", "--retrain-top", "2", "--out", str(tmp_path / "z.json")]) == 2
    assert "lightnas ends on one architecture" in capsys.readouterr().err
    assert not (tmp_path / "z.json").exists()


def test_job_refuses_host_targets_and_unknown_rows() -> None:
    with pytest.raises(ConfigError, match="host-ort' is a host target"):
        device_column("nb201", "host-ort")
    assert device_column("nb201", "pixel2") == "pixel2"
    problem = tabular_problem("nb201", "pixel2")
    missing = next(s for s in problem.space.enumerate() if s not in problem.accuracy)
    with pytest.raises(DataError, match="not in the nb201 tables"):
        problem.objective(missing)
    assert problem.estimate(missing)["latency_ms"] == float("inf")
    with pytest.raises(BudgetError):
        run_search_job(SearchJobConfig(target="pixel2", latency_ms=problem.min_latency_ms / 2, n_trials=2),
                       "/nonexistent-dir-never-written/x.json")


LIGHTNAS = ["search", "--method", "lightnas", "--space", "mbconv", "--target", "host-ort", "--width", "0.5",
            "--n-train", "96", "--warmup-epochs", "1", "--epochs", "1", "--table-archs", "6"]


def test_cli_lightnas_lands_records_and_refuses_bad_targets(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """LightNAS through the CLI on the bundled CIFAR-10 subset: a target inside the fitted table's range gives
    a searched network (weights, spec, measured latency), every architecture step and measurement in the
    record; a rerun reuses the record; targets outside the table's range and data of another shape fail
    clearly, reusing the fitted table."""
    from devicefit.core import ArchSpec, read_json
    from devicefit.search import LatencyTable
    from devicefit.space import MBCONV_OPS, get_space
    from devicefit.train import load_weights

    out, work = tmp_path / "ln.json", tmp_path / "work"
    assert main([*LIGHTNAS, "--latency-ms", "100", "--out", str(out), "--work-dir", str(work)]) == 2  # fits it
    [table_path] = work.glob("latency_table-*.json")
    lo, hi = LatencyTable.load(table_path).range_ms()
    assert f"above the largest network of mbconv at width 0.5 on host-ort ({hi:.4g} ms" in capsys.readouterr().err
    assert main([*LIGHTNAS, "--latency-ms", str(lo / 2), "--out", str(out), "--work-dir", str(work)]) == 2
    assert f"below the smallest network of mbconv at width 0.5 on host-ort: {lo:.4g} ms" in capsys.readouterr().err
    assert main([*LIGHTNAS, "--latency-ms", str((lo + hi) / 2), "--data", "fsdd", "--out", str(out),
                 "--work-dir", str(work)]) == 2
    assert "pick the space made for this data" in capsys.readouterr().err
    assert main([*LIGHTNAS, "--latency-ms", "1", "--space", "resnet_cifar", "--out", str(out)]) == 2
    assert "'resnet_cifar' is not an MBConv space" in capsys.readouterr().err
    assert not out.exists()  # nothing searched, nothing written

    target = lo + 0.5 * (hi - lo)
    res = run_json(capsys, *LIGHTNAS, "--latency-ms", str(target), "--out", str(out), "--work-dir", str(work))
    record = read_json(out)
    r = record["result"]
    assert res["result"]["measured_ms"] == r["measured_ms"] > 0
    assert r["measured_over_target"] == pytest.approx(r["measured_ms"] / target)
    assert len(record["evaluated"]) == 96 // 64 + 1 and r["lambda"] == record["evaluated"][-1]["lambda"]
    n_layers = get_space("mbconv").n_layers
    assert all(len(e["ops"]) == n_layers and set(e["ops"]) <= set(MBCONV_OPS) for e in record["evaluated"])
    assert r["measurements"] and r["measurements"][-1]["phase"] == "closing"  # measured anchoring by default
    spec = ArchSpec.from_dict(read_json(work / r["model_dir"] / "spec.json"))
    assert spec.to_dict() == r["spec"] and spec["widths"] == (0.5,) * 6
    net = get_space("mbconv").build(spec, num_classes=10)
    load_weights(net, work / r["model_dir"] / "model.pt")  # the extracted supernet weights load into it
    again = run_json(capsys, *LIGHTNAS, "--latency-ms", str(target), "--out", str(out), "--work-dir", str(work))
    assert again["result"] == res["result"]  # the finished record is reused, not searched again


def test_cli_lightnas_lands_on_a_ratio_to_a_reference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """LightNAS with a relative target ("0.8 × the space's k3_e6 network"): the record holds the reference in the
    table's units, every side-by-side timing, and the result's paired ratio, with measured/T = ratio / target;
    a ratio outside the table's range, a ratio without a reference and a bad reference are clear errors."""
    from devicefit.core import read_json
    from devicefit.search import LatencyTable

    out, work = tmp_path / "ratio.json", tmp_path / "work"
    args = [*LIGHTNAS, "--reference", "k3_e6@0.5", "--out", str(out), "--work-dir", str(work)]
    assert main([*args, "--latency-ratio", "0.01"]) == 2
    err = capsys.readouterr().err
    assert "latency_ratio 0.01 is below the smallest network of mbconv at width 0.5 on host-ort:" in err
    assert "x k3_e6@0.5 by the latency table" in err
    assert main([*LIGHTNAS, "--latency-ratio", "0.8", "--out", str(out)]) == 2
    assert "latency_ratio and reference go together" in capsys.readouterr().err
    assert main([*args[:-4], "--reference", "k3_e6@2", "--latency-ratio", "0.8", "--out", str(out),
                 "--work-dir", str(work)]) == 2
    assert "expected an .onnx file or 'op@width'" in capsys.readouterr().err
    assert not out.exists()

    res = run_json(capsys, *args, "--latency-ratio", "0.8", "--retrain-epochs", "1")
    r, record = res["result"], read_json(out)
    # trained from scratch: the run folder's weights give the reported test accuracy
    from devicefit import data as D
    from devicefit.core import ArchSpec
    from devicefit.space import get_space
    from devicefit.train import evaluate, load_weights

    rt = record["retrain"]
    net = get_space("mbconv").build(ArchSpec.from_dict(r["spec"]), num_classes=10)
    load_weights(net, work / rt["run_dir"] / "model.pt")
    test = D.load_dataset("cifar10", "test")
    assert rt["epochs"] == 1 and rt["test_images"] == len(test)
    assert evaluate(net.eval(), test)["accuracy"] == pytest.approx(rt["test_accuracy"])
    assert r["measured_over_target"] == pytest.approx(r["measured_ratio"] / 0.8)
    assert r["measured_ratio"] == pytest.approx(record["table"]["reference_timings"][-1]["ratio"])
    assert r["measured_ms"] > 0 and r["reference_measured_ms"] > 0
    t = record["table"]
    assert t["reference"] == "k3_e6@0.5" and r["target"] == pytest.approx(0.8 * t["reference_ms"])
    lo, hi = LatencyTable.load(next(work.glob("latency_table-*.json"))).range_ms()
    assert lo <= r["target"] <= hi
    phases = [m["phase"] for m in t["reference_timings"]]
    assert phases[0] == "calibrate" and phases.count("ratio") == len(r["measurements"]) + 1  # closing + result
    assert all(m["measured"] == pytest.approx(tm["ratio"] * t["reference_ms"])
               for m, tm in zip(r["measurements"], t["reference_timings"][1:], strict=False))


def test_cli_lightnas_lands_on_a_peak_sram_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """LightNAS with peak SRAM as the constrained quantity: targets outside the space's achievable peaks and a
    doubled target are clear errors; a target at an achievable peak gives a network whose analyzed peak is
    the predicted one, within 5 % of the target (the repair reaches it when the search does not)."""
    from devicefit.core import ArchSpec, read_json
    from devicefit.nn import analyze
    from devicefit.space import get_space
    from devicefit.space._mbconv_cost import mbconv_peak_table

    space, out, work = get_space("mbconv"), tmp_path / "sram.json", tmp_path / "work"
    floor, table = mbconv_peak_table(space, (0.5,) * 6, num_classes=10)
    lo, hi = max(floor, float(np.nanmax(np.nanmin(table, axis=1)))), max(floor, float(np.nanmax(table)))
    args = [a for a in LIGHTNAS if a not in ("--table-archs", "6")] + ["--out", str(out), "--work-dir", str(work)]
    assert main([*args, "--peak-sram-kib", str(lo / 1024 / 2)]) == 2
    assert f"below the smallest peak of mbconv at width 0.5 (int8 activations): {lo / 1024:.4g} KiB" in \
        capsys.readouterr().err
    assert main([*args, "--peak-sram-kib", str(hi / 1024 * 2)]) == 2
    assert "every network meets it" in capsys.readouterr().err
    assert main([*args, "--peak-sram-kib", "64", "--latency-ms", "1"]) == 2
    assert "give exactly one target: latency_ms, latency_ratio (with reference) or peak_sram_kib" in \
        capsys.readouterr().err
    assert main(["search", "--space", "mbconv", "--target", "host-ort", "--method", "random"]) == 2
    assert "--latency-ms is required for --method random" in capsys.readouterr().err
    assert not out.exists() and not list(work.glob("latency_table-*"))  # no table timed for a peak target

    levels = sorted(v for v in {floor, *table[~np.isnan(table)].tolist()} if lo <= v <= hi)
    target = levels[len(levels) // 2]
    res = run_json(capsys, *args, "--peak-sram-kib", str(target / 1024))
    r, record = res["result"], read_json(out)
    spec = ArchSpec.from_dict(r["spec"])
    net = get_space("mbconv").build(spec, num_classes=10)
    assert r["analyzed_peak_bytes"] == analyze(net, (3, 32, 32)).peak_activation_bytes == r["cost"]
    assert abs(r["analyzed_over_target"] - 1) <= 0.05 and record["unit"] == "bytes"
    assert all("predicted_bytes" in e for e in record["evaluated"]) and r["measurements"] == []


SUPERNET = ["search", "--space", "mbconv", "--target", "host-ort", "--n-train", "96", "--supernet-epochs", "1",
            "--latency-samples", "5", "--bn-batches", "1"]


@pytest.mark.parametrize("method", ["hsconas", "random"])
def test_cli_supernet_search_records_verifies_and_resumes(method: str, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """HSCoNAS / random search of the MBConv space through the CLI on the bundled CIFAR-10 subset: an
    infeasible budget names the smallest network's latency (keeping the measured samples); a feasible one
    records every candidate with its supernet accuracy and estimated latency, scales the winner's channels
    within the budget, writes the chosen network and times it; more trials continue the stored study."""
    from devicefit.core import ArchSpec, read_json, read_jsonl
    from devicefit.nn import analyze
    from devicefit.space import get_space
    from devicefit.train import load_weights

    out, work = tmp_path / "s.json", tmp_path / "work"
    scaling = method == "hsconas"
    common = [*SUPERNET, "--method", method, "--out", str(out), "--work-dir", str(work),
              *(["--scaling-max-drop", "0"] if scaling else ["--no-channel-scaling", "--retrain-epochs", "1",
                                                            "--retrain-top", "2", "--path-sampling", "sandwich"])]
    assert main([*common, "--latency-ms", "1e-4"]) == 2
    err = capsys.readouterr().err
    assert "below the smallest network of mbconv on host-ort:" in err and "ms measured" in err
    samples = read_jsonl(work / "latency-host-ort.jsonl")
    assert len(samples) >= 5 and not out.exists()
    budget = sorted(r["latency_ms"] for r in samples)[len(samples) // 2]

    res = run_json(capsys, *common, "--latency-ms", str(budget), "--n-trials", "6")
    record = read_json(out)
    assert record["n_evaluated"] == len(record["evaluated"]) == 6
    assert len(read_jsonl(work / "latency-host-ort.jsonl")) == len(samples)  # measured once, reused
    name = "host-ort:latency_ms"
    for e in record["evaluated"]:
        assert 0.0 <= e["metrics"]["accuracy"] <= 1.0 and e["metrics"][name] > 0
        assert e["feasible"] == (e["metrics"][name] <= budget)
    first = ArchSpec.from_dict(record["evaluated"][0]["spec"])
    assert record["evaluated"][0]["metrics"]["peak_sram_bytes"] == analyze(
        get_space("mbconv").build(first, num_classes=10), (3, 32, 32)).peak_activation_bytes
    for cost in (name, "peak_sram_bytes"):  # each front: its members undominated, every other one dominated
        pts = {e["number"]: (e["metrics"]["accuracy"], e["metrics"][cost]) for e in record["evaluated"]}
        front = record["pareto"][cost]

        def beats(a: tuple[float, float], b: tuple[float, float]) -> bool:
            return a[0] >= b[0] and a[1] <= b[1] and a != b
        assert front and all(not any(beats(pts[j], pts[i]) for j in pts) for i in front)
        assert all(any(beats(pts[j], pts[i]) or pts[j] == pts[i] for j in front) for i in pts if i not in front)
    top = max(e["metrics"]["accuracy"] for e in record["evaluated"] if e["feasible"])
    c = record["chosen"]  # the searched spec is a feasible candidate of the top accuracy (ties are possible)
    best = next(e for e in record["evaluated"] if e["spec"] == c["searched_spec"])
    searched = c["spec"]
    assert best["feasible"] and best["metrics"]["accuracy"] == top
    assert c["predicted_ms"] <= budget and c["measured_ms"] > 0
    assert c["measured_over_budget"] == pytest.approx(c["measured_ms"] / budget)
    acc, n_val = c["supernet_val_accuracy"], c["val_images"]  # the proxy's binomial noise on its split
    assert n_val > 0 and c["supernet_val_accuracy_sampling_std"] == pytest.approx((acc * (1 - acc) / n_val) ** 0.5)
    widen = [step for step in c["channel_scaling"] if step["move"] == "widen"]
    assert all(step["cost"] <= budget for step in widen)
    if not scaling:  # random: no scaling; the two best candidates retrained from scratch, the better by val. chosen
        assert record["config"]["path_sampling"] == "sandwich"  # its supernet trained by the sandwich rule
        rt = record["retrain"]
        assert c["channel_scaling"] == [] and rt["epochs"] == 1
        fin = rt["finalists"]
        assert len(fin) == 2 and fin[0]["spec"] == c["searched_spec"] and fin[1]["spec"] != fin[0]["spec"]
        runner_up = max((e for e in record["evaluated"] if e["feasible"] and e["spec"] != c["searched_spec"]),
                        key=lambda e: e["metrics"]["accuracy"])
        assert fin[1]["supernet_val_accuracy"] == runner_up["metrics"]["accuracy"]
        pick = rt["finalist"]
        assert fin[pick]["val_accuracy"] == max(f["val_accuracy"] for f in fin) and c["spec"] == fin[pick]["spec"]
        assert rt["test_accuracy"] == fin[pick]["test_accuracy"] and 0.0 <= rt["test_accuracy"] <= 1.0
        assert c["selected_by"].startswith(f"validation accuracy after training: finalist {pick + 1} of 2")
        for f in fin:
            assert (Path(f["run_dir"]) / "model.pt").is_file() and 0.0 <= f["test_accuracy"] <= 1.0
        searched = fin[0]["spec"]
    else:  # scaling kept the best-scoring widths seen on its walk
        assert record["retrain"] is None and record["config"]["scaling_max_drop"] == 0.0
        assert c["supernet_val_accuracy"] >= max(e["metrics"]["accuracy"] for e in record["evaluated"]
                                                 if e["spec"] == c["searched_spec"])
    assert ArchSpec.from_dict(searched)["ops"] == ArchSpec.from_dict(best["spec"])["ops"]  # scaling keeps ops
    spec = ArchSpec.from_dict(read_json(Path(c["model_dir"]) / "spec.json"))
    assert spec.to_dict() == c["spec"]
    load_weights(get_space("mbconv").build(spec, num_classes=10), Path(c["model_dir"]) / "model.pt")
    assert (Path(c["model_dir"]) / "model.onnx").is_file()
    assert res["chosen"] == c and record["latency_model"]["loo_median_abs_rel_error"] >= 0

    more = run_json(capsys, *common, "--latency-ms", str(budget), "--n-trials", "8")
    assert more["n_evaluated"] == 8
    assert [e["spec"] for e in read_json(out)["evaluated"][:6]] == [e["spec"] for e in record["evaluated"]]
