"""`devicefit predictor fit|eval|predict`: latency predictors on a table device or a profile run."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from devicefit.core import ArchSpec, ConfigError

from ._output import Output
from ._registry import command


def _add_source(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--target", help="a table device, e.g. nb201-pixel2 (see `devicefit targets ls --kind table`)")
    src.add_argument("--measurements", help="a `devicefit profile` run directory or its measurements.jsonl")
    p.add_argument("--data-dir", help="folder with the measured tables (default: $DEVICEFIT_DATA_DIR, else bundled)")


@command("predictor")
class PredictorCommand:
    help = "fit a latency predictor on a table device or profile run, evaluate it, or predict with it"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        fit = sub.add_parser("fit", help="fit on N sampled architectures, report held-out metrics, save JSON")
        _add_source(fit)
        fit.add_argument("--kind", default="gbdt", help="lut, mlp, gbdt or transfer (default gbdt)")
        fit.add_argument("--n", type=int, default=100, help="training architectures (default 100)")
        fit.add_argument("--seed", type=int, default=0)
        fit.add_argument("--out", required=True, help="predictor file to write (.json)")
        ev = sub.add_parser("eval", help="metrics of a saved predictor on all architectures of a source")
        ev.add_argument("file")
        _add_source(ev)
        pr = sub.add_parser("predict", help="latency of one architecture")
        pr.add_argument("file")
        pr.add_argument("--ops", help="comma-separated ops, one per position (e.g. 6 for nb201)")
        pr.add_argument("--spec", help="an ArchSpec as JSON or a spec.json file")

    def run(self, args: argparse.Namespace, out: Output) -> int:
        return {"fit": _fit, "eval": _eval, "predict": _predict}[args.action](args, out)


def _fit(args: argparse.Namespace, out: Output) -> int:
    from devicefit.hardware import evaluate_predictions
    from devicefit.pipelines import latency_samples, make_predictor

    specs, y, family, source = latency_samples(target=args.target, measurements=args.measurements,
                                               data_dir=args.data_dir)
    if not 2 <= args.n < len(specs):
        raise ConfigError(f"--n must be in [2, {len(specs) - 1}] for {source} ({len(specs)} architectures), "
                          f"got {args.n}")
    order = np.random.default_rng(args.seed).permutation(len(specs))
    train, test = order[:args.n], order[args.n:]
    exclude = (_column(args.target),) if args.target else ()
    predictor = make_predictor(args.kind, family, data_dir=args.data_dir, exclude=exclude)
    predictor.fit([specs[i] for i in train], y[train])
    metrics = evaluate_predictions(y[test], predictor.predict([specs[i] for i in test]))
    path = predictor.save(args.out)
    _report(out, f"{args.kind} on {source}: trained on {len(train)}, held out {len(test)}", metrics)
    out.say(f"saved {path}")
    out.set_result(kind=args.kind, source=source, n_train=len(train), file=str(path), metrics=metrics)
    return 0


def _column(target: str) -> str:
    from devicefit.hardware import get_target

    return str(get_target(target).column)


def _eval(args: argparse.Namespace, out: Output) -> int:
    from devicefit.hardware import evaluate_predictions, load_predictor
    from devicefit.pipelines import latency_samples

    specs, y, family, source = latency_samples(target=args.target, measurements=args.measurements,
                                               data_dir=args.data_dir)
    predictor = load_predictor(args.file, family=family)
    metrics = evaluate_predictions(y, predictor.predict(specs))
    _report(out, f"{args.file} on {source} ({len(specs)} architectures)", metrics)
    out.set_result(file=args.file, source=source, metrics=metrics)
    return 0


def _predict(args: argparse.Namespace, out: Output) -> int:
    from devicefit.core import read_json
    from devicefit.hardware import get_encoding, load_predictor

    predictor = load_predictor(args.file)
    family = predictor.family_
    if (args.ops is None) == (args.spec is None):
        raise ConfigError("give exactly one of --ops or --spec")
    if args.spec is not None:
        p = Path(args.spec)
        spec = ArchSpec.from_dict(read_json(p)) if p.is_file() else ArchSpec.from_json(args.spec)
    else:
        spec = get_encoding(str(family)).spec([o.strip() for o in args.ops.split(",")])
    latency_ms = float(predictor.predict([spec])[0])
    out.say(f"{spec}: {latency_ms:.4f} ms (predicted)")
    out.set_result(spec=spec.to_dict(), latency_ms=latency_ms)
    return 0


def _report(out: Output, title: str, m: dict) -> None:
    out.say(title)
    out.say(f"  within ±5% {100 * m['within_5']:.1f}%   within ±10% {100 * m['within_10']:.1f}%   "
            f"MAPE {100 * m['mape']:.1f}%   RMSE {m['rmse_ms']:.4f} ms   Spearman {m['spearman']:.3f}   "
            f"Kendall {m['kendall']:.3f}")
