"""Small language models: weight formats (GGUF-exact Q8_0/Q4_0/Q4_1/Q5_0, RTN int8/4/3, GPTQ, AWQ,
AWQ+GPTQ) and KV-cache bits (fp16/8/4/2), each scored side by side in one run against the
unquantized model: perplexity, KL, top-1 agreement, bits per weight, weight and KV-cache bytes.

    python benchmarks/llm.py --data-dir ../shared/data                   # stories260K + SmolLM2-135M
    python benchmarks/llm.py --quick                                     # bundled text, smoke run

Protocol. Text: TinyStories validation stories 0-999 (`tinystories-valid-1k`), the 51 stories with
mojibake filtered out (non-ASCII); evaluation = the first N clean stories below index 500 (N = 200:
stories 0-199, all clean), calibration = the last M clean stories from index 500 on (never evaluated).
Each story is scored alone: BOS (when the model uses one) + tokens, truncated to the context, mean
next-token NLL pooled over all predicted tokens. stories260K weight table at its full 512-token
context (comparable to llama2.c's val loss 1.2968); KV table and SmolLM2 at 256 tokens. Only the 7
block matrices per layer are quantized (embeddings, norms, tied classifier stay as loaded).
stories260K's w2 rows have 172 weights: int grids use a ragged last group (12 weights); GGUF types
keep w2 in fp16 (llama.cpp's fallback), counted in bits/weight. Quantized weights are evaluated
dequantized (exactly the values a reader of the format computes). `+tune`: the stored group
scales/mins (and, with tune_norms, the RMSNorm gains) tuned end to end against the fp model's
next-token distribution on the calibration stories, codes fixed (`llm.tune_scales_`).

Speed and memory: decode tokens/s of the fp32 model (eager PyTorch) and, with --speed-formats, of
the packed formats run by torch's CPU weight-only kernels (`llm.pack_llama`: int4 two per byte via
`_weight_int4pack_mm_for_cpu`, int8 per-row via `_weight_int8pack_mm`), each in a fresh process one
after another in the same run, batch 1, --threads threads; with model bytes in memory and RSS.

    python benchmarks/llm.py --data-dir ../shared/data --models stories260K --n-calib 256 --no-kv \
        --rows "fp32,int4-g32-asym (RTN),int4-g32-asym AWQ+GPTQ+tune" --tag 4bit      # the 4-bit target

Writes benchmarks/results/llm{,-quick,-<model>}.{json,md} atomically (`-<model>` when --models names one,
then `-<tag>` with --tag).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import gguf
import gguf.quants as gq
import numpy as np
import torch

from devicefit import llm
from devicefit.core import atomic_write_json, atomic_write_text, machine_info

RESULTS = Path(__file__).resolve().parent / "results"

# (label, weight config or None = unquantized); `ragged` is resolved per model
WEIGHT_ROWS: list[tuple[str, dict[str, Any] | None]] = [
    ("fp32", None),
    ("q8_0 (RTN)", dict(format="q8_0")),
    ("int8-g32-asym (RTN)", dict(format="int8-g32-asym")),
    ("q5_0 (RTN)", dict(format="q5_0")),
    ("q4_1 (RTN)", dict(format="q4_1")),
    ("q4_0 (RTN)", dict(format="q4_0")),
    ("int4-g32-asym (RTN)", dict(format="int4-g32-asym")),
    ("int4-g32-asym GPTQ", dict(format="int4-g32-asym", method="gptq")),
    ("int4-g32-asym AWQ", dict(format="int4-g32-asym", method="awq")),
    ("int4-g32-asym AWQ+GPTQ", dict(format="int4-g32-asym", method="awq-gptq")),
    ("int4-g32-asym GPTQ+tune", dict(format="int4-g32-asym", method="gptq", tune_epochs=4)),
    ("int4-g32-asym AWQ+GPTQ+tune", dict(format="int4-g32-asym", method="awq-gptq", tune_epochs=3, tune_norms=True)),
    ("int3-g32-asym (RTN)", dict(format="int3-g32-asym")),
    ("int3-g32-asym GPTQ", dict(format="int3-g32-asym", method="gptq")),
    ("int3-g32-asym AWQ+GPTQ", dict(format="int3-g32-asym", method="awq-gptq")),
]
KV_WEIGHTS = ("fp32", "int8-g32-asym (RTN)", "int4-g32-asym AWQ+GPTQ", "int3-g32-asym AWQ+GPTQ")
KV_BITS = (0, 8, 4, 2)
# decode speed/memory: formats run by torch's packed CPU kernels (RTN codes; speed does not depend on values)
SPEED_FORMATS = ("fp32", "int8-row-absmax", "int4-g32-asym", "int4-g64-asym")


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def speed_worker(name: str, fmt: str, data_dir: str | None, new_tokens: int, repeats: int,
                 threads: int) -> dict[str, Any]:
    """One format in a fresh process: build the packed model, free the float copies, then time decoding."""
    import gc
    from collections import Counter

    torch.set_num_threads(threads)
    lm = llm.load_lm(name, data_dir, max_seq_len=512)
    model, kernels = lm.model, {"float32": len(llm.linear_names(lm.model))}
    if fmt != "fp32":
        packed = llm.pack_llama(llm.quantize_llama(lm.model, llm.WeightQuantConfig(format=fmt, on_ragged="keep")))
        model, kernels = packed.model, dict(Counter(packed.kernels.values()))
    del lm
    gc.collect()
    rss = _rss_bytes()
    sp = llm.decode_speed(model, prompt_len=16, new_tokens=new_tokens, repeats=repeats, threads=threads)
    return {"format": fmt, "kernels": kernels, "model_bytes": llm.model_bytes(model), "rss_bytes_built": rss,
            "rss_bytes_after_decode": _rss_bytes(), "decode": sp.to_dict()}


def _speed_rows(name: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    import json
    import subprocess
    import sys

    out = []
    for fmt in args.speed_formats.split(","):
        cmd = [sys.executable, __file__, "--speed-worker", name, fmt, "--threads", str(args.threads),
               "--speed-tokens", str(args.speed_tokens), "--speed-repeats", str(args.speed_repeats)]
        if args.data_dir:
            cmd += ["--data-dir", args.data_dir]
        res = subprocess.run(cmd, check=True, capture_output=True, text=True)
        out.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(f"  speed {fmt:18s} {out[-1]['decode']['value']:.2f} tokens/s", flush=True)
    return out


def _gguf_check(lm: llm.LoadedLM, q: llm.QuantizedLlama, tmp: Path) -> dict[str, Any]:
    """Every packed matrix vs `gguf.quants.quantize` of the original weights, and the file re-read."""
    fmt = q.format_name
    qtype = gguf.GGMLQuantizationType[fmt.upper()]
    same = n = 0
    for name, qm in q.matrices.items():
        if qm is None:
            continue
        ref = gq.quantize(lm.model.get_submodule(name).weight.detach().numpy(), qtype)
        same += int(np.array_equal(llm.pack_matrix(qm, fmt), ref))
        n += 1
    path = llm.write_gguf(q, lm.tokenizer, tmp / f"{lm.name}-{fmt}.gguf")
    reader = gguf.GGUFReader(path)
    return {"matrices_bit_exact": f"{same}/{n}", "gguf_file_bytes": path.stat().st_size,
            "gguf_tensors": len(reader.tensors)}


def _weight_rows(lm: llm.LoadedLM, ev: list[list[int]], calib: list[list[int]], tmp: Path,
                 rows: list[tuple[str, dict[str, Any] | None]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    out, models = [], {}
    ref = llm.reference_logprobs(lm.model, ev)
    for label, kw in rows:
        t0 = time.perf_counter()
        if kw is None:
            model, matrices, extra = lm.model, lm.matrices, {}
            label = "as shipped (GGUF file)" if lm.matrices else label
        else:
            fmt = kw["format"]
            ragged = "keep" if fmt in llm.GRIDS else "ragged"
            cfg = llm.WeightQuantConfig(**{**kw, "on_ragged": ragged})
            q = llm.quantize_llama(lm.model, cfg, calib)
            model, matrices = q.model, q.matrices
            extra = _gguf_check(lm, q, tmp) if fmt in llm.GRIDS else {}
        quant_s = time.perf_counter() - t0
        s = llm.score_lm(model, ev, reference=ref if kw is not None else None)
        models[label] = model
        out.append({"weights": label, "bits_per_weight": llm.block_bits_per_weight(model, matrices),
                    "weight_bytes": llm.weight_bytes(model, matrices), **s.to_dict(),
                    "quantize_s": round(quant_s, 1), **extra})
        print(f"  {label:26s} ppl {s.perplexity:.4f}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    base = out[0]["perplexity"]
    for r in out:
        r["ppl_change_pct"] = 100 * (r["perplexity"] / base - 1)
    return out, models


def _kv_rows(lm: llm.LoadedLM, models: dict[str, llm.Llama], ev: list[list[int]], context: int) -> list[dict[str, Any]]:
    out = []
    ref = llm.reference_logprobs(lm.model, ev)
    for label in KV_WEIGHTS:
        label = next(iter(models)) if label == "fp32" else label  # the unquantized row, whatever its name
        if label not in models:
            continue
        model = models[label]
        for bits in KV_BITS:
            kv = llm.KVQuantConfig(bits=bits) if bits else None
            llm.set_kv_quant_(model, kv)
            try:
                s = llm.score_lm(model, ev, reference=ref)
            finally:
                llm.set_kv_quant_(model, None)
            out.append({"weights": label, "kv_bits": bits or 16,
                        "kv_cache_bytes": llm.kv_cache_bytes(model.cfg, context, kv), **s.to_dict()})
            print(f"  KV {bits or 16:2d} bits, {label:26s} ppl {s.perplexity:.4f}", flush=True)
    base = out[0]["perplexity"]
    for r in out:
        r["ppl_change_pct"] = 100 * (r["perplexity"] / base - 1)
    return out


PRUNE_ROWS = (("wanda", "unstructured"), ("magnitude", "unstructured"), ("wanda", "2:4"), ("magnitude", "2:4"))


def _prune_rows(lm: llm.LoadedLM, ev: list[list[int]], calib: list[list[int]]) -> list[dict[str, Any]]:
    """50% sparsity of the block matrices (no retraining), scored against the unquantized model."""
    out = []
    ref = llm.reference_logprobs(lm.model, ev)
    base = llm.score_lm(lm.model, ev).perplexity
    for score, pattern in PRUNE_ROWS:
        pr = llm.prune_llama(lm.model, llm.PruneConfig(pattern=pattern, sparsity=0.5, score=score), calib)
        s = llm.score_lm(pr.model, ev, reference=ref)
        out.append({"score": score, "pattern": pattern, "sparsity": pr.sparsity(), **s.to_dict(),
                    "ppl_change_pct": 100 * (s.perplexity / base - 1)})
        print(f"  prune {score:9s} {pattern:12s} ppl {s.perplexity:.4f}", flush=True)
    return out


def _texts(lm: llm.LoadedLM, data_dir: str | None, n_eval: int, n_calib: int, context: int,
           calib_len: int) -> tuple[list[list[int]], list[list[int]], str]:
    corpus = llm.clean_stories(llm.load_stories(data_dir), "filter")
    ev, ca = llm.split_eval_calib(corpus, n_eval, n_calib)
    return (llm.encode_texts(lm.tokenizer, ev.texts, context, "evaluation stories"),
            llm.encode_texts(lm.tokenizer, ca.texts, calib_len, "calibration stories"),
            f"{len(ev.texts)} eval stories (indices {ev.indices[0]}-{ev.indices[-1]}), "
            f"{len(ca.texts)} calibration stories (indices {ca.indices[0]}-{ca.indices[-1]}); {_rel(ev.source)}")


def _rel(path: str) -> str:
    """A source note with its leading file path made relative to the repository root."""
    import os

    head, sep, tail = path.partition("; ")
    return (os.path.relpath(head, RESULTS.parent.parent) if os.path.isabs(head) else head) + sep + tail


def bench_model(name: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    print(f"== {name}", flush=True)
    quick = args.quick
    lm = llm.load_lm(name, args.data_dir, max_seq_len=512)
    small = name == "stories260K"
    n_eval = args.n_eval if small else args.smollm_n_eval
    n_calib = args.n_calib if small else args.smollm_n_calib
    w_ctx = 512 if small else 256
    ev, calib, text = _texts(lm, args.data_dir, n_eval, n_calib, w_ctx, 256 if small else 128)
    rows = WEIGHT_ROWS if small else [r for r in WEIGHT_ROWS if r[0] in args.smollm_rows]
    if args.rows:
        rows = [r for r in rows if r[0] in args.rows]
    if not small:  # AWQ's scale search costs ~grid x tokens x weights: fewer tokens on the larger model
        rows = [(lab, kw if kw is None else {**kw, "max_calib_tokens": args.smollm_calib_tokens}) for lab, kw in rows]
    weights, models = _weight_rows(lm, ev, calib, tmp, rows[:3] if quick else rows)
    ev256 = [s[:256] for s in ev[:args.kv_n_eval]]
    kv = _kv_rows(lm, models, ev256, 256) if (small or args.smollm_kv) and not args.no_kv else []
    speed = llm.decode_speed(lm.model, prompt_len=16, new_tokens=32 if quick else 64, repeats=3 if quick else 5,
                             threads=args.threads)
    return {"model": name, "source": _rel(str(lm.source)), "params": lm.model.num_params(), "text": text,
            "weight_context": w_ctx, "eval_tokens": sum(len(s) - 1 for s in ev), "weights": weights, "kv": kv,
            "kv_eval_stories": len(ev256), "kv_eval_tokens": sum(len(s) - 1 for s in ev256),
            "decode_speed_fp32": speed.to_dict(), "speed": _speed_rows(name, args) if args.speed_formats else [],
            "prune": _prune_rows(lm, ev, calib) if args.prune else []}


def _markdown(res: dict[str, Any]) -> str:
    lines = ["# Small language models: weight and KV-cache quantization", "",
             f"Machine: {res['machine']['cpu_model']}, {res['threads']} thread(s); run {res['seconds']:.0f} s. "
             "Quantized weights are evaluated dequantized; perplexity change is relative to the first row "
             "of each table, measured in the same run.", ""]
    for m in res["models"]:
        sp = m["decode_speed_fp32"]
        lines += [f"## {m['model']} ({m['params']:,} parameters)", "", f"Text: {m['text']}.",
                  f"Weight table at {m['weight_context']}-token context, {m['eval_tokens']:,} scored tokens. "
                  f"Decode speed (fp32, eager PyTorch, batch 1): median {sp['value']:.1f} tokens/s "
                  f"(p10 {sp['spread']['p10']:.1f}, p90 {sp['spread']['p90']:.1f}, cv {sp['spread']['cv']:.2f}).", "",
                  "| weights | bits/weight | weight bytes | perplexity | change | KL (nats) | top-1 | GGUF check |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in m["weights"]:
            kl = "-" if r["kl_nats"] is None else f"{r['kl_nats']:.4f}"
            t1 = "-" if r["top1_agreement"] is None else f"{100 * r['top1_agreement']:.1f}%"
            g = (f"{r['matrices_bit_exact']} bit-exact, {r['gguf_file_bytes']:,} B file"
                 if "matrices_bit_exact" in r else "")
            lines.append(f"| {r['weights']} | {r['bits_per_weight']:.2f} | {r['weight_bytes']:,} | "
                         f"{r['perplexity']:.4f} | {r['ppl_change_pct']:+.2f}% | {kl} | {t1} | {g} |")
        if m["kv"]:
            lines += ["", f"KV cache at a 256-token context, first {m['kv_eval_stories']} eval stories "
                      f"({m['kv_eval_tokens']:,} tokens); KIVI-style: keys per channel over 32-token groups, values "
                      "per token in groups of 32 channels, fp16 scale/min, the incomplete key group in fp16; "
                      "bytes for one sequence, fp16 baseline:", "",
                      "| weights | KV bits | KV bytes | perplexity | change vs fp32/fp16 | KL (nats) | top-1 |",
                      "|---|---|---|---|---|---|---|"]
            for r in m["kv"]:
                lines.append(f"| {r['weights']} | {r['kv_bits']} | {r['kv_cache_bytes']:,} | {r['perplexity']:.4f} | "
                             f"{r['ppl_change_pct']:+.2f}% | {r['kl_nats']:.4f} | {100 * r['top1_agreement']:.1f}% |")
        lines += _speed_md(m["speed"]) + _prune_md(m.get("prune", []))
        lines.append("")
    return "\n".join(lines)


def _prune_md(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    lines = ["", "Pruning at 50% of the block-matrix weights, no retraining, calibration as above; change vs the "
             "unquantized model on the weight table's stories:", "",
             "| score | pattern | sparsity | perplexity | change | KL (nats) | top-1 |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['score']} | {r['pattern']} | {100 * r['sparsity']:.1f}% | {r['perplexity']:.4f} | "
                     f"{r['ppl_change_pct']:+.2f}% | {r['kl_nats']:.4f} | {100 * r['top1_agreement']:.1f}% |")
    return lines


def _speed_md(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    d = rows[0]["decode"]["method"]
    base = rows[0]["decode"]["value"]
    lines = ["", f"Decode speed and memory of the packed formats (RTN codes), each in a fresh process, one after "
             f"another in this run: greedy decoding, batch 1, {d['threads']} thread(s), prompt {d['prompt_len']}, "
             f"{d['new_tokens']} new tokens, median of {d['repeats']} repeats after {d['warmup']} warm-up; "
             "model bytes = parameters and packed buffers in memory; RSS = resident set after building the model "
             "with the float copies freed, and after decoding (it includes memory the allocator kept from the "
             "freed float copies, so model bytes, not RSS, is the weights' footprint):", "",
             "| format | kernels (block matrices) | tokens/s (p10-p90) | vs fp32 | model bytes | RSS built "
             "| RSS after decode |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        sp = r["decode"]
        kern = ", ".join(f"{k} x{v}" for k, v in r["kernels"].items())
        lines.append(f"| {r['format']} | {kern} | {sp['value']:.2f} "
                     f"({sp['spread']['p10']:.2f}-{sp['spread']['p90']:.2f}) "
                     f"| {sp['value'] / base:.2f}x | {r['model_bytes']:,} | {r['rss_bytes_built'] / 2**20:.0f} MiB | "
                     f"{r['rss_bytes_after_decode'] / 2**20:.0f} MiB |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--quick", action="store_true", help="bundled text, 3 weight rows, stories260K only")
    p.add_argument("--models", default="stories260K,smollm2-135m")
    p.add_argument("--n-eval", type=int, default=200)
    p.add_argument("--n-calib", type=int, default=128)
    p.add_argument("--kv-n-eval", type=int, default=100, help="stories for the KV table (its attention is slower)")
    p.add_argument("--smollm-n-eval", type=int, default=8, help="SmolLM2 evaluation stories (CPU time)")
    p.add_argument("--smollm-n-calib", type=int, default=16)
    p.add_argument("--smollm-rows", default="fp32,q8_0 (RTN),q4_1 (RTN),int4-g32-asym (RTN),int4-g32-asym GPTQ,"
                   "int4-g32-asym AWQ,int3-g32-asym (RTN)", help="weight rows (labels) for SmolLM2")
    p.add_argument("--smollm-kv", action="store_true", help="also the KV table for SmolLM2")
    p.add_argument("--smollm-calib-tokens", type=int, default=512, help="AWQ search tokens on SmolLM2")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rows", default="", help="only these weight rows (labels, comma-separated; first = baseline)")
    p.add_argument("--no-kv", action="store_true", help="skip the KV-cache table")
    p.add_argument("--tag", default="", help="results file suffix: llm-<model>-<tag>")
    p.add_argument("--speed-formats", default=",".join(SPEED_FORMATS), help="packed-kernel speed rows ('' = none)")
    p.add_argument("--speed-tokens", type=int, default=32)
    p.add_argument("--speed-repeats", type=int, default=3)
    p.add_argument("--prune", action="store_true", help="also the Wanda/magnitude 50%% pruning table")
    p.add_argument("--speed-worker", nargs=2, metavar=("MODEL", "FORMAT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.speed_worker:
        import json

        print(json.dumps(speed_worker(*args.speed_worker, args.data_dir, args.speed_tokens, args.speed_repeats,
                                      args.threads)))
        return
    args.rows = set(args.rows.split(",")) - {""}
    args.smollm_rows = set(args.smollm_rows.split(","))
    torch.set_num_threads(args.threads)
    models = ["stories260K"] if args.quick else args.models.split(",")
    t0 = time.perf_counter()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = [bench_model(m, args, Path(tmp)) for m in models]
    res = {"benchmark": "llm", "quick": args.quick, "threads": args.threads, "models": out,
           "seconds": time.perf_counter() - t0, "machine": machine_info(),
           "config": {k: (sorted(v) if isinstance(v, set) else v) for k, v in vars(args).items()}}
    stem = "llm-quick" if args.quick else "llm" if len(models) > 1 else f"llm-{models[0]}"
    stem += f"-{args.tag}" if args.tag else ""
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS / f"{stem}.json", res)
    atomic_write_text(RESULTS / f"{stem}.md", _markdown(res))
    print(_markdown(res))


if __name__ == "__main__":
    main()
