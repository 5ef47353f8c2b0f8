"""`devicefit deploy --target T RUN_DIR --out DIR`: int8 C project for a microcontroller, memory fit,
verification (sanitized host build, QEMU) and a JSON/Markdown report."""

from __future__ import annotations

import argparse

from ._output import Output
from ._registry import command


@command("deploy")
class DeployCommand:
    help = "generate int8 C for a microcontroller target from a train run, check flash/SRAM, verify under QEMU"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("source", help="a directory written by `devicefit train`")
        parser.add_argument("--target", default="cortex-m4-256k", help="an mcu target (default: cortex-m4-256k)")
        parser.add_argument("--out", required=True, help="output folder: c/ project, deploy.json, deploy.md")
        parser.add_argument("--cores", default="", help="comma-separated QEMU cores to verify on (default: the "
                                                        "target's cpu; e.g. cortex-m4,cortex-m7,cortex-m55)")
        parser.add_argument("--planner", default="greedy", help="arena planner: greedy or naive (default greedy)")
        parser.add_argument("--n-calibration", type=int, default=200, help="train examples for activation ranges")
        parser.add_argument("--n-qemu", type=int, default=4, help="test inputs run under QEMU per core")
        parser.add_argument("--n-test", type=int, default=None, help="cap on host-verified test inputs (default all)")
        parser.add_argument("--data-dir", help="folder with full dataset copies (default: the run's setting)")

    def run(self, args: argparse.Namespace, out: Output) -> int:
        from devicefit.pipelines._deploy_job import DeployJobConfig, run_deploy_job

        cfg = DeployJobConfig(source=args.source, target=args.target, out=args.out,
                              cores=tuple(c for c in args.cores.split(",") if c), planner=args.planner,
                              n_calibration=args.n_calibration, n_qemu=args.n_qemu, n_test=args.n_test,
                              data_dir=args.data_dir)
        report = run_deploy_job(cfg, echo=out.say)
        fit, ver = report["memory_fit"], report["verification"]
        out.say(f"wrote {args.out}/c (model.c, model.h), {args.out}/deploy.json and {args.out}/deploy.md")
        out.set_result(out_dir=args.out, fits=fit["fits"], memory_fit=fit, arena=report["arena"],
                       verification=ver)
        ok = ver["host_bit_exact"] and all(r["bit_exact"] for r in ver["qemu"])
        return 0 if ok and fit["fits"] else 1
