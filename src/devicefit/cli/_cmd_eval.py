"""`devicefit eval RUN_DIR`: evaluate a trained run's weights on a split."""

from __future__ import annotations

import argparse
from pathlib import Path

from devicefit.core import ArchSpec, ConfigError, from_dict, read_json

from ._output import Output
from ._registry import command


@command("eval")
class EvalCommand:
    help = "evaluate the model of a train run directory on the test (or another) split"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run_dir", help="a directory written by `devicefit train`")
        parser.add_argument("--split", default="test", help="dataset split to evaluate (default: test)")
        parser.add_argument("--data-dir", help="folder with full dataset copies (default: the run's setting)")

    def run(self, args: argparse.Namespace, out: Output) -> int:
        from devicefit import data as D
        from devicefit import models as M
        from devicefit import train as T
        from devicefit.pipelines import TrainJobConfig

        run_dir = Path(args.run_dir)
        for name in ("config.json", "spec.json", "model.pt"):
            if not (run_dir / name).exists():
                raise ConfigError(f"{run_dir} is not a finished train run: {name} is missing")
        cfg = from_dict(TrainJobConfig, read_json(run_dir / "config.json")["config"])
        model = M.build(ArchSpec.from_dict(read_json(run_dir / "spec.json")))
        T.load_weights(model, run_dir / "model.pt")
        ds = D.load_dataset(cfg.data.name, args.split, args.data_dir or cfg.data.data_dir, **cfg.data.options)
        m = T.evaluate(model, ds, batch_size=cfg.train.eval_batch_size)
        out.say(f"{cfg.model.name} on {ds.source} [{args.split}]: accuracy {100 * m['accuracy']:.2f}% "
                f"(loss {m['loss']:.4f}, n={m['n']})")
        out.set_result(run_dir=str(run_dir), split=args.split, source=ds.source,
                       **{k: v for k, v in m.items() if k != "confusion"})
        return 0
