"""The LightNAS job behind `devicefit search --method lightnas`: one differentiable search of an MBConv space
that lands on a latency target of a host target, with its latency table, the searched network and a JSON
record of every architecture step.

Steps (work folder `work_dir`):
1. latency table (`search.LatencyTable`) of the space at the stage width `width` on `target`, fitted to
   end-to-end timings of `table_archs` sampled networks; kept as `latency_table-<id>.json` and reused by every
   later search with the same table settings;
2. the target is checked against the table's range: below its cheapest network → `BudgetError` naming the
   smallest achievable latency; above the dearest → `ConfigError` (every network meets it: nothing to search);
3. one LightNAS run (weight-only warm-up epochs, then search epochs), measured-anchored by default
   (`anchor`: after the search, a closing loop times the result on the target and repairs it against the
   measurement, so the table's local bias and the machine's drift are measured away; `measure_every` > 0
   also re-anchors during the search, which on CIFAR-10 made the controller swing (argmax at 0.54-1.43 T at
   the end of the search, benchmarks/results/nas_lightnas_real-anchored.md), hence off by default);
4. the searched network, extracted from the supernet with its shared weights (`model.pt`, `spec.json`), is
   timed on the target (median of `verify_rounds` timings) and compared with the target.
With `latency_ratio` and `reference` instead of `latency_ms`, the target is relative and checked side by side,
so the machine's drift cancels (`search.ReferenceLatency`): "land at `latency_ratio` × the reference's latency
on `target`". The reference ("op@width", the space's network with that op everywhere at that width, e.g.
"k3_e6@0.75"; or an .onnx file) is expressed once in the table's units R by timing it beside a few of the
table's calibration networks; T = ratio · R steers the search; the closing loop times each candidate beside
the reference (measured = paired ratio · R); the result is verified by its paired ratio to the reference, and
measured/T = paired ratio / `latency_ratio`.
With `peak_sram_kib` instead of `latency_ms`, the constrained quantity is the int8 peak activation memory (what
a microcontroller's arena holds): the cost is `space._mbconv_cost.mbconv_peak_table`, exact per layer, so there
is no table to time and no anchoring; the target is checked against the space's smallest and largest peak, and
the result's peak is re-analyzed from the extracted network (`nn.analyze`).
The record (`out`, written atomically) holds the config, the table's held-out error and range, every
architecture step (its argmax architecture and predicted latency), every measurement and the result. A run
whose record exists with the same config is not repeated; a killed run restarts the search, keeping the table.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from devicefit.core import (
    ArchSpec,
    BudgetError,
    ConfigError,
    atomic_write_json,
    check_int,
    check_positive,
    machine_info,
    read_json,
)

from ._search_data import retrain_from_scratch, search_splits

__all__ = ["LightNASJobConfig", "run_lightnas_job"]

Log = Callable[[str], None]


@dataclass(frozen=True)
class LightNASJobConfig:
    """The target, exactly one of: `latency_ms` T on `target` (a host target the latency table can time, e.g.
    "host-ort"); `latency_ratio` (> 0) × the latency of `reference` ("op@width" or an .onnx file) on `target`,
    checked side by side in `pair_rounds` interleaved rounds; or `peak_sram_kib` a peak-SRAM target in KiB
    (int8 activations, analytic and exact);
    `space` a registered MBConv space ("mbconv" for 32×32 images, "mbconv_kws" for audio features) searched at
    stage width `width`; `data` a dataset name (`data_dir`: its full copy, None = the bundled subset),
    `n_train` training images (0 = all; the validation split for architecture steps is `val_fraction` of the
    training set); `warmup_epochs` weight-only, then `search_epochs` (LightNAS's default controller);
    `retrain_epochs` > 0 trains the searched network from scratch (SGD, cosine, the data's augmentation; run
    folder `<model dir>/retrain`, resumable) and reports its test accuracy, the accuracy that counts;
    `table_archs` / `table_passes` the latency table's calibration networks and passes; `anchor` measured
    anchoring every `measure_every` architecture steps (0: only the closing loop); `verify_rounds` timings of
    the result; `threads` torch and ORT threads; `work_dir` where the table and the searched network go."""

    latency_ms: float | None
    work_dir: str
    space: str = "mbconv"
    target: str = "host-ort"
    data: str = "cifar10"
    data_dir: str | None = None
    width: float = 0.5
    n_train: int = 0
    val_fraction: float = 0.1
    batch_size: int = 64
    warmup_epochs: int = 2
    search_epochs: int = 2
    table_archs: int = 60
    table_passes: int = 2
    anchor: bool = True
    measure_every: int = 0
    verify_rounds: int = 5
    threads: int = 1
    seed: int = 0
    peak_sram_kib: float | None = None
    latency_ratio: float | None = None
    reference: str | None = None
    pair_rounds: int = 7
    retrain_epochs: int = 0

    def __post_init__(self) -> None:
        given = {k: getattr(self, k) for k in ("latency_ms", "latency_ratio", "peak_sram_kib")}
        if sum(v is not None for v in given.values()) != 1:
            raise ConfigError("give exactly one target: latency_ms, latency_ratio (with reference) or peak_sram_kib "
                              f"(got {', '.join(f'{k}={v!r}' for k, v in given.items())})")
        for k, v in given.items():
            if v is not None:
                check_positive(k, v)
        if (self.latency_ratio is None) != (self.reference is None):
            raise ConfigError(f"latency_ratio and reference go together: the ratio is to the reference's latency "
                              f"(got latency_ratio={self.latency_ratio!r}, reference={self.reference!r})")
        if self.reference is not None and (not isinstance(self.reference, str) or not self.reference):
            raise ConfigError(f"reference must be 'op@width' (e.g. 'k3_e6@0.75') or an .onnx path, got "
                              f"{self.reference!r}")
        check_int("pair_rounds", self.pair_rounds, 3)
        check_int("retrain_epochs", self.retrain_epochs)
        check_positive("width", self.width)
        for name in ("warmup_epochs", "n_train", "measure_every", "seed"):
            check_int(name, getattr(self, name))
        for name in ("search_epochs", "batch_size", "table_archs", "table_passes", "verify_rounds", "threads"):
            check_int(name, getattr(self, name), 1)
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")


def _table(cfg: LightNASJobConfig, work: Path, log: Log) -> Any:
    from devicefit.search import LatencyTable, LatencyTableConfig

    tcfg = LatencyTableConfig(space=cfg.space, widths=cfg.width, target=cfg.target, n_archs=cfg.table_archs,
                              passes=cfg.table_passes, threads=cfg.threads, seed=cfg.seed)
    path = work / f"latency_table-{ArchSpec('table', asdict(tcfg)).spec_id[:8]}.json"
    if path.is_file():
        log(f"latency table: reusing {path.name}")
        return LatencyTable.load(path, space=cfg.space, widths=cfg.width, target=cfg.target)
    log(f"latency table: timing {cfg.table_archs} + 2 networks of {cfg.space} at width {cfg.width:g} on "
        f"{cfg.target}, {cfg.table_passes} pass(es)")
    table = LatencyTable(tcfg).fit(log=log)
    table.save(path)
    return table


def _check_target(cfg: LightNASJobConfig, lo: float, hi: float) -> None:
    assert cfg.latency_ms is not None
    if cfg.latency_ms < lo:
        raise BudgetError(f"latency_ms {cfg.latency_ms:g} is below the smallest network of {cfg.space} at width "
                          f"{cfg.width:g} on {cfg.target}: {lo:.4g} ms by the latency table (the cheapest op in "
                          "every layer); raise latency_ms or lower width")
    if cfg.latency_ms > hi:
        raise ConfigError(f"latency_ms {cfg.latency_ms:g} is above the largest network of {cfg.space} at width "
                          f"{cfg.width:g} on {cfg.target} ({hi:.4g} ms by the latency table): every network "
                          "meets it; raise width to search a larger space")


def _reference(cfg: LightNASJobConfig, space: Any, table: Any, work: Path, log: Log) -> tuple[Any, float]:
    """The calibrated `ReferenceLatency` of `cfg.reference` and T = latency_ratio · R (table units), checked
    against the table's range: below its cheapest network → BudgetError naming the smallest achievable ratio;
    above its dearest → ConfigError."""
    from devicefit.search import ReferenceLatency, parse_reference

    assert cfg.reference is not None and cfg.latency_ratio is not None
    ref = parse_reference(space, cfg.reference)
    path = table.export(ref, work / f"reference-{ref.spec_id[:8]}.onnx") if isinstance(ref, ArchSpec) else ref
    timer = ReferenceLatency(table, path, rounds=cfg.pair_rounds, seed=cfg.seed)
    log(f"reference {cfg.reference}: timing it beside {timer.n_calibration} of the table's networks")
    r_ms = timer.calibrate()
    lo, hi = table.range_ms()
    where = f"{cfg.space} at width {cfg.width:g} on {cfg.target}"
    if cfg.latency_ratio * r_ms < lo:
        raise BudgetError(f"latency_ratio {cfg.latency_ratio:g} is below the smallest network of {where}: "
                          f"{lo / r_ms:.3g} x {cfg.reference} by the latency table; raise latency_ratio or lower width")
    if cfg.latency_ratio * r_ms > hi:
        raise ConfigError(f"latency_ratio {cfg.latency_ratio:g} is above the largest network of {where} "
                          f"({hi / r_ms:.3g} x {cfg.reference} by the latency table): every network meets it; raise "
                          "width to search a larger space")
    now = timer.records_[-1]["reference_now_ms"]
    log(f"reference {cfg.reference}: {r_ms:.4g} ms in the table's units (now {now:.4g} ms); "
        f"T = {cfg.latency_ratio:g} x = {cfg.latency_ratio * r_ms:.4g} ms")
    return timer, cfg.latency_ratio * r_ms


def _peak_cost(cfg: LightNASJobConfig, space: Any, classes: int) -> tuple[Any, float, float, tuple[float, ...]]:
    """(MaxCost in bytes, smallest and largest achievable peak, widths) for a peak-SRAM target, which is checked
    against that range (BudgetError / ConfigError naming the achievable peak in KiB)."""
    from devicefit.search import MaxCost
    from devicefit.space._mbconv_cost import mbconv_peak_table

    assert cfg.peak_sram_kib is not None
    widths = tuple(cfg.width for _ in space.stages)
    cost = MaxCost(*mbconv_peak_table(space, widths, num_classes=classes, input_shape=space.input_shape))
    lo, hi = cost.range()
    where = f"{cfg.space} at width {cfg.width:g} (int8 activations)"
    if cfg.peak_sram_kib * 1024 < lo:
        raise BudgetError(f"peak_sram_kib {cfg.peak_sram_kib:g} is below the smallest peak of {where}: "
                          f"{lo / 1024:.4g} KiB; raise peak_sram_kib or lower width")
    if cfg.peak_sram_kib * 1024 > hi:
        raise ConfigError(f"peak_sram_kib {cfg.peak_sram_kib:g} is above the largest peak of {where} "
                          f"({hi / 1024:.4g} KiB): every network meets it; raise width to search a larger space")
    return cost, lo, hi, widths


class _Batches:
    """A re-iterable of torch (x, y) batches: every pass reshuffles and re-augments (seeded)."""

    def __init__(self, ds: Any, batch_size: int, seed: int, augment: str) -> None:
        from devicefit import data as D

        self.loader = D.BatchLoader(ds, batch_size, shuffle=True, augment=augment, seed=seed)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Any:
        import torch

        for x, y in self.loader:
            yield torch.as_tensor(x), torch.as_tensor(y)


def run_lightnas_job(cfg: LightNASJobConfig, out: Path, *, log: Log | None = None,
                     on_batch: Callable[[int, int, int], None] | None = None) -> dict[str, Any]:
    """Run the job (see the module); returns the record also written to `out`. `on_batch(done, total, epoch)`
    reports search progress in training batches."""
    import torch

    from devicefit.nn import analyze, export_onnx
    from devicefit.search import LightNAS, LightNASConfig
    from devicefit.space import MBCONV_OPS, MBConvSpace, MBConvSupernet, get_space
    from devicefit.train import save_weights

    say: Log = log or (lambda _m: None)
    work = Path(cfg.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    config = asdict(cfg)
    if out.is_file():
        old = read_json(out)
        if isinstance(old, dict) and old.get("config") == config and "result" in old:
            say(f"{out} holds this search already; delete it to search again")
            return old  # type: ignore[no-any-return]
    torch.set_num_threads(cfg.threads)
    space = get_space(cfg.space)
    if not isinstance(space, MBConvSpace):
        raise ConfigError(f"space {cfg.space!r} is not an MBConv space: LightNAS searches mbconv or mbconv_kws")
    sram, ref = cfg.peak_sram_kib is not None, None
    if not sram:
        table = _table(cfg, work, say)
        lo, hi = table.range_ms()
        if cfg.latency_ratio is not None:
            ref, target_ms = _reference(cfg, space, table, work, say)
        else:
            _check_target(cfg, lo, hi)
            assert cfg.latency_ms is not None
            target_ms = cfg.latency_ms
    train, val, classes = search_splits(cfg.data, cfg.data_dir, space=cfg.space, input_shape=space.input_shape,
                                        val_fraction=cfg.val_fraction, n_train=cfg.n_train,
                                        batch_size=cfg.batch_size, seed=cfg.seed)
    if sram:
        assert cfg.peak_sram_kib is not None
        cost, lo, hi, widths = _peak_cost(cfg, space, classes)
        target, unit, measure = cfg.peak_sram_kib * 1024, "bytes", None
        say(f"LightNAS: T = {cfg.peak_sram_kib:g} KiB of peak SRAM (range {lo / 1024:.4g}-{hi / 1024:.4g} KiB)")
    else:
        cost, target, unit, widths = table.cost(), target_ms, "ms", table.config.stage_widths
        measure = (ref if ref is not None else table.time_spec) if cfg.anchor else None
        say(f"LightNAS: T = {target_ms:.4g} ms (table range {lo:.3f}-{hi:.3f} ms)"
            + (", measured anchoring" + (" beside the reference" if ref is not None else "") if cfg.anchor else ""))
    torch.manual_seed(cfg.seed)
    net = MBConvSupernet(space, num_classes=classes).set_active(space.smallest().replace(widths=widths))
    from devicefit import data as D

    train_b = _Batches(train, cfg.batch_size, cfg.seed, D.DATASETS.get(cfg.data).augment)
    val_b = _Batches(val, cfg.batch_size, cfg.seed + 1, "none")
    epochs = cfg.warmup_epochs + cfg.search_epochs
    ncfg = LightNASConfig(target=target, epochs=epochs, warmup_epochs=cfg.warmup_epochs, seed=cfg.seed,
                          measure_every=cfg.measure_every if measure is not None else 0)
    total = epochs * len(train_b)
    say(f"LightNAS: {cfg.warmup_epochs} warm-up + {cfg.search_epochs} search epochs over {len(train)} images")
    t0 = time.perf_counter()
    nas = LightNAS(net, cost, ncfg, measure=measure)
    nas.fit(train_b, val_b, on_batch=None if on_batch is None else
            (lambda e, b: on_batch(e * len(train_b) + b + 1, total, e)))
    search_s = time.perf_counter() - t0
    model = net.extract(nas.spec_).eval()
    model_dir = work / f"searched-{nas.spec_.spec_id[:8]}"
    model_dir.mkdir(parents=True, exist_ok=True)
    save_weights(model, model_dir / "model.pt")
    atomic_write_json(model_dir / "spec.json", nas.spec_.to_dict())
    export_onnx(model, tuple(space.input_shape), model_dir / "model.onnx")
    if sram:
        peak = analyze(model, tuple(space.input_shape)).peak_activation_bytes
        check: dict[str, Any] = {"analyzed_peak_bytes": peak, "analyzed_over_target": peak / target}
        say(f"LightNAS: searched in {search_s:.0f} s; predicted {nas.cost_ / 1024:.4g} KiB, analyzed "
            f"{peak / 1024:.4g} KiB of peak SRAM (analyzed/T {peak / target:.3f}); network in {model_dir}")
        table_info: dict[str, Any] = {"kind": "mbconv_peak_table", "range_bytes": [lo, hi]}
    elif ref is not None:
        assert cfg.latency_ratio is not None
        ratio = ref.ratio(model_dir / "model.onnx", label="result", rounds=max(cfg.verify_rounds, 3))
        last = ref.records_[-1]
        check = {"measured_ratio": ratio, "measured_over_target": ratio / cfg.latency_ratio,
                 "measured_ms": last["candidate_ms"], "reference_measured_ms": last["reference_now_ms"],
                 "measured_rounds_ms": last["rounds_ms"]}
        say(f"LightNAS: searched in {search_s:.0f} s; measured {ratio:.4g} x {cfg.reference} side by side "
            f"({last['candidate_ms']:.4g} vs {last['reference_now_ms']:.4g} ms) for a {cfg.latency_ratio:g} x target "
            f"(measured/T {ratio / cfg.latency_ratio:.3f}); network in {model_dir}")
        table_info = {"holdout": table.holdout_, "range_ms": [lo, hi], "constant_ms": table.constant_ms_,
                      "reference": cfg.reference, "reference_ms": ref.reference_ms_, "reference_timings": ref.records_}
    else:
        timings = [table.time_onnx(model_dir / "model.onnx") for _ in range(cfg.verify_rounds)]
        measured = float(np.median(timings))
        check = {"measured_ms": measured, "measured_rounds_ms": timings, "measured_over_target": measured / target}
        say(f"LightNAS: searched in {search_s:.0f} s; predicted {nas.cost_:.4g} ms, measured {measured:.4g} ms "
            f"(measured/T {measured / target:.3f}); network in {model_dir}")
        table_info = {"holdout": table.holdout_, "range_ms": [lo, hi], "constant_ms": table.constant_ms_}
    retrain = None
    if cfg.retrain_epochs:
        from devicefit import data as D
        from devicefit import train as T

        test = D.load_dataset(cfg.data, "test", cfg.data_dir)
        tcfg = T.TrainConfig(epochs=cfg.retrain_epochs, batch_size=cfg.batch_size, threads=cfg.threads, seed=cfg.seed)
        run_dir = model_dir / "retrain"
        retrain = retrain_from_scratch(space, nas.spec_, cfg.data, (train, val, test), classes, tcfg, run_dir, log=say)
        retrain["run_dir"] = str(run_dir.relative_to(model_dir.parent))
    result = nas.result()
    history = result.pop("history")
    record = {"kind": "lightnas-search", "config": config, "ops": list(MBCONV_OPS), "unit": unit,
              "table": table_info,
              "result": {**result, **check, "search_s": search_s, "model_dir": model_dir.name},
              "retrain": retrain,
              "evaluated": [{"step": h["step"], "epoch": h["epoch"], "ops": [MBCONV_OPS[i] for i in h["argmax"]],
                             f"predicted_{unit}": h["cost_argmax"], "lambda": h["lambda_after"]} for h in history],
              "machine": machine_info()}
    atomic_write_json(out, record)
    return record
