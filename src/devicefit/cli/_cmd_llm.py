"""`devicefit llm eval|quantize|generate MODEL`: small language models, quantized and measured."""

from __future__ import annotations

import argparse
from typing import Any

from ._output import Output
from ._registry import command


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="stories260K, smollm2-135m, or a llama2.c .bin / .gguf file")
    p.add_argument("--data-dir", help="folder with stories260k/ and tinystories-valid-1k/ (default: bundled)")


def _add_quant(p: argparse.ArgumentParser, formats: str) -> None:
    p.add_argument("--format", action="append", dest="formats",
                   help=f"weight format, repeatable: {formats} (default fp32)")
    p.add_argument("--group", type=int, default=32, help="group size for <method>-<bits> formats (0 = per row)")
    p.add_argument("--sym", action="store_true", help="symmetric grid for <method>-<bits> (default: zero point)")
    p.add_argument("--on-ragged", default="ragged", choices=("error", "ragged", "keep"),
                   help="group size not dividing a row: error, shorter last group, or keep that matrix in fp16")
    p.add_argument("--n-calib", type=int, default=128, help="calibration stories for gptq/awq (default 128)")
    p.add_argument("--tune-epochs", type=int, default=0,
                   help="tune the stored scales/mins end to end on the calibration stories (0 = off)")
    p.add_argument("--threads", type=int, default=1)


@command("llm")
class LLMCommand:
    help = "evaluate, quantize (GGUF, GPTQ, AWQ) and run small language models"

    def configure(self, parser: argparse.ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        ev = sub.add_parser("eval", help="perplexity, KL, bits/weight, bytes and tokens/s per format")
        _add_model(ev)
        _add_quant(ev, "fp32, q8_0, q4_0, q4_1, q5_0, int4-g32-asym, rtn-4, gptq-4, awq-4, awq-gptq-4")
        ev.add_argument("--kv-bits", type=int, default=0, help="quantize the KV cache to 8/4/2 bits (0 = exact)")
        ev.add_argument("--context", type=int, default=256, help="tokens per story and KV-cache context")
        ev.add_argument("--n-eval", type=int, default=200, help="evaluation stories (default 200)")
        ev.add_argument("--packed", action="store_true",
                        help="time decoding with packed int4/int8 CPU kernels (else float weights)")
        qu = sub.add_parser("quantize", help="quantize and write a .gguf (never overwrites the input)")
        _add_model(qu)
        _add_quant(qu, "q8_0, q4_0, q4_1, q5_0, gptq-4, awq-4 (GGUF-typed grids only)")
        qu.add_argument("--out", required=True, help="the .gguf file to write")
        ge = sub.add_parser("generate", help="generate text (greedy unless --temperature > 0)")
        _add_model(ge)
        ge.add_argument("--prompt", default="")
        ge.add_argument("--max-new-tokens", type=int, default=64)
        ge.add_argument("--temperature", type=float, default=0.0)
        ge.add_argument("--top-k", type=int, default=0)
        ge.add_argument("--seed", type=int, default=0)

    def run(self, args: argparse.Namespace, out: Output) -> int:
        return {"eval": self._eval, "quantize": self._quantize, "generate": self._generate}[args.action](args, out)

    def _cfg(self, args: argparse.Namespace, fmt: str, **extra: Any) -> Any:
        from devicefit.pipelines._llm_job import LLMJobConfig

        return LLMJobConfig(model=args.model, format=fmt, group_size=args.group, symmetric=args.sym,
                            on_ragged=args.on_ragged, n_calib=args.n_calib, threads=args.threads,
                            data_dir=args.data_dir, tune_epochs=args.tune_epochs, **extra)

    def _eval(self, args: argparse.Namespace, out: Output) -> int:
        from devicefit import llm
        from devicefit.pipelines._llm_job import run_llm_eval

        formats = args.formats or ["fp32"]
        cfgs = [self._cfg(args, f, kv_bits=args.kv_bits, context=args.context, n_eval=args.n_eval,
                          packed=args.packed) for f in formats]
        lm = llm.load_lm(args.model, args.data_dir)
        results = [run_llm_eval(c, lm) for c in cfgs]
        rows = [_row(f, r["metrics"]) for f, r in zip(formats, results, strict=True)]
        m0 = results[0]["metrics"]
        out.table(f"{lm.name}: {m0['n_tokens']} tokens of {m0['n_sequences']} stories, context {args.context}, "
                  f"KV {args.kv_bits or 'fp16'} bits, {args.threads} thread(s)",
                  ["format", "bits/weight", "weight bytes", "KV bytes", "perplexity", "KL nats", "top-1", "tokens/s"],
                  rows)
        for r in results:
            for note in r["metrics"]["notes"]:
                out.say(f"note: {note}")
        out.set_result(model=lm.name, results=results)
        return 0

    def _quantize(self, args: argparse.Namespace, out: Output) -> int:
        from devicefit.pipelines._llm_job import run_llm_quantize

        fmt = (args.formats or ["q8_0"])[-1]
        rec = run_llm_quantize(self._cfg(args, fmt), args.out)
        m = rec["metrics"]
        out.say(f"wrote {args.out}: {fmt}, {m['bits_per_weight']:.3f} bits/weight over the block matrices, "
                f"{m['file_bytes']:,} bytes ({m['quantize_s']:.1f} s)")
        for note in m["notes"]:
            out.say(f"note: {note}")
        out.set_result(**rec)
        return 0

    def _generate(self, args: argparse.Namespace, out: Output) -> int:
        from devicefit.pipelines._llm_job import run_llm_generate

        g = run_llm_generate(args.model, args.prompt, args.max_new_tokens, args.temperature, args.top_k,
                             args.seed, args.data_dir)
        out.say(g.text)
        out.set_result(text=g.text, ids=g.ids, n_new=g.n_new)
        return 0


def _row(fmt: str, m: dict[str, Any]) -> list[Any]:
    kl = "-" if m["kl_nats"] is None else f"{m['kl_nats']:.4f}"
    top1 = "-" if m["top1_agreement"] is None else f"{100 * m['top1_agreement']:.1f}%"
    sp = m["decode_tokens_per_s"]
    return [fmt, f"{m['bits_per_weight']:.2f}", f"{m['weight_bytes']:,}", f"{m['kv_cache_bytes']:,}",
            f"{m['perplexity']:.4f}", kl, top1, f"{sp['value']:.0f} (p10 {sp['spread']['p10']:.0f})"]
