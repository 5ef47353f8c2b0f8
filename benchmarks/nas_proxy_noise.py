"""How much of the HSCoNAS benchmark's proxy and test figures is sampling noise? Re-score and re-test on more images.

`benchmarks/nas_hsconas.py` on the bundled CIFAR-10 subset scores each candidate by its supernet path's accuracy
on 500 validation images (the *proxy*) and tests retrained networks on 1,000 test images. At 45% accuracy one
500-image figure has a binomial standard deviation of 2.2 points (1,000 images: 1.6), as large as the gaps
between the best candidates. This benchmark takes that run's work dir as it is (no training) and

- re-scores candidates with the same supernet and the same BatchNorm re-estimation on `--splits` × `--split-size`
  images of the full CIFAR-10 training set that the bundled subset does not hold (so the supernet never trained
  on them): each search's `--top-per-search` best candidates by proxy, the retrained networks and the
  MobileNetV2 family. Per candidate: accuracy on all of them and on each of `--splits` random splits (their
  spread is the proxy's own noise);
- tests every retrained network (each seed) on the full 10,000-image CIFAR-10 test set;
- reports the proxy's noise, how far each method's chosen candidates fall from their 500-image proxy on fresh
  images (the winner's curse of taking the maximum of noisy scores), and how well each figure ranks the retrained
  networks by their 10,000-image test accuracy (Kendall's tau).

    python benchmarks/nas_proxy_noise.py --data-dir ../shared/data \\
        --result benchmarks/results/nas_hsconas-mbconv-sandwich-top3.json

Scores and test figures are cached as JSON lines in the work dir, so a killed run resumes. Writes
benchmarks/results/nas_proxy_noise.{json,md} (or `--out`).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from devicefit import data as D
from devicefit import train as T
from devicefit.core import ArchSpec, atomic_write_json, atomic_write_text, machine_info, read_json, read_jsonl
from devicefit.space import get_space

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import nas_hsconas as N  # noqa: E402  (the search benchmark whose work dir is re-used)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=True, help="full CIFAR-10 copy (fresh proxy images, 10,000 test images)")
    ap.add_argument("--result", type=Path, default=HERE / "results" / "nas_hsconas-mbconv-sandwich-top3.json",
                    help="a nas_hsconas.py result whose work dir still holds the supernet and retrained networks")
    ap.add_argument("--work-dir", type=Path, default=None, help="that run's work dir (default: from its settings)")
    ap.add_argument("--splits", type=int, default=10, help="fresh proxy splits")
    ap.add_argument("--split-size", type=int, default=500, help="images per fresh split (the search used 500)")
    ap.add_argument("--top-per-search", type=int, default=2, help="best candidates by proxy taken from each search")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "nas_proxy_noise")
    return ap.parse_args()


def fresh_images(train_subset: Any, full: Any, n: int) -> Any:
    """`n` images of `full` (random, seed 0) whose pixels match no image of the bundled `train_subset`."""
    def digest(x: np.ndarray) -> bytes:
        return hashlib.blake2b(x.tobytes(), digest_size=12).digest()
    seen = {digest(x) for x in train_subset.x}
    keep = np.array([digest(x) not in seen for x in full.x])
    idx = np.flatnonzero(keep)
    if len(idx) < n:
        raise SystemExit(f"--splits × --split-size = {n} fresh images wanted, {len(idx)} available")
    pick = np.sort(np.random.default_rng(0).permutation(idx)[:n])  # sorted: class by class, as stored
    return full.subset(pick, "fresh"), int(len(full) - len(idx))


def cached(path: Path) -> dict[str, dict[str, Any]]:
    return {r["key"]: r for r in read_jsonl(path)} if path.exists() else {}


def append(path: Path, row: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


def candidates(result: dict[str, Any], searches: dict[str, Any], top: int) -> dict[str, dict[str, Any]]:
    """spec json -> {spec, proxy (the search's 500-image score), roles}: each search's `top` best feasible
    candidates, the retrained networks and the family."""
    out: dict[str, dict[str, Any]] = {}

    def add(spec: dict[str, Any], proxy: float, role: str) -> None:
        key = ArchSpec.from_dict(spec).to_json()
        out.setdefault(key, {"spec": spec, "proxy": proxy, "roles": []})["roles"].append(role)
    for stem, doc in searches.items():
        best = sorted((h for h in doc["evaluated"] if h["feasible"]), key=lambda h: -h["metrics"]["accuracy"])
        for i, h in enumerate(best[:top]):
            add(h["spec"], h["metrics"]["accuracy"], f"{stem.rsplit('-', 1)[0][len('search-'):]} top{i + 1}")
    for r in result["retrain"]:
        add(r["spec"], r["proxy_accuracy"], f"retrained {r['name']}")
    for f in result["family"]:
        add(f["spec"], f["accuracy"], f"family ×{f['width']}")
    return out


def proxy_fit(searches: dict[str, Any]) -> dict[str, Any]:
    """Least squares of the proxy (in points) over every candidate the searches scored, on predicted latency and
    the op mix: does the proxy prefer large kernels, expansion 6 or skips at a fixed latency? Coefficients are
    points per layer against a k3_e3 layer (per ms for latency, per unit of mean stage width for widths)."""
    seen: dict[str, tuple[dict[str, Any], dict[str, float]]] = {}
    for doc in searches.values():
        for h in doc["evaluated"]:
            seen[ArchSpec.from_dict(h["spec"]).to_json()] = (h["spec"]["params"], h["metrics"])
    names = ["intercept", "latency_ms", "k5_layers", "k7_layers", "e6_layers", "skip_layers", "mean_width"]
    rows, ys = [], []
    for params, m in seen.values():
        ops = params["ops"]
        rows.append([1.0, m["latency_ms"], sum(o.startswith("k5") for o in ops), sum(o.startswith("k7") for o in ops),
                     sum(o.endswith("e6") for o in ops), ops.count("skip"), float(np.mean(params["widths"]))])
        ys.append(100 * m["accuracy"])
    x, y = np.asarray(rows), np.asarray(ys)
    coef = np.linalg.lstsq(x, y, rcond=None)[0]
    return {"n": len(ys), "coef_points": dict(zip(names, coef.tolist(), strict=True)),
            "residual_std_points": float(np.std(y - x @ coef, ddof=len(names)))}


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    result = read_json(args.result)
    s = result["settings"]
    work = args.work_dir or HERE.parent / s["work_dir"]
    ns = argparse.Namespace(**{**s, "data_dir": None, "work_dir": work})
    space = get_space(s["space"])
    train = N.load_data(ns)[0]
    full_train = D.load_dataset("cifar10", "train", args.data_dir)
    subset = D.load_dataset("cifar10", "train", None)
    fresh, overlap = fresh_images(subset, full_train, args.splits * args.split_size)
    test10k = D.load_dataset("cifar10", "test", args.data_dir)
    net, sn_dir, _ = N.train_supernet(space, train, ns, work)  # finished: loaded from its checkpoint
    net.eval()
    searches = {f.stem: read_json(f) for f in sorted(work.glob("search-*.json"))}  # one JSON per method × seed
    cands = candidates(result, searches, args.top_per_search)
    N.log(f"{len(cands)} candidates; {len(fresh)} fresh images ({overlap} of the full training set are the "
          f"bundled subset's); scoring")

    # per image: was the candidate right? Splits are a seeded random partition of the fresh images (the full set is
    # stored class by class, so consecutive images would make one-class splits)
    score_path = sn_dir / f"fresh-images-{N.tag([len(fresh), s['bn_batches'], s['batch_size']])}.jsonl"
    scores = cached(score_path)
    n_cached_scores = len(scores)
    parts = np.random.default_rng(1).permutation(len(fresh))[: args.splits * args.split_size]
    parts = parts.reshape(args.splits, args.split_size)
    for n_done, (key, c) in enumerate(cands.items()):
        if key not in scores:
            sub = T.recalibrate_bn_(net.extract(ArchSpec.from_dict(c["spec"])), train, batches=s["bn_batches"],
                                    batch_size=s["batch_size"], seed=0)
            right = (T.predict_logits(sub, fresh, batch_size=64).argmax(1).numpy() == fresh.y)
            scores[key] = {"key": key, "correct_hex": np.packbits(right).tobytes().hex()}
            append(score_path, scores[key])
            if n_done % 10 == 0:
                N.log(f"scored {n_done + 1}/{len(cands)}")
        right = np.unpackbits(np.frombuffer(bytes.fromhex(scores[key]["correct_hex"]), np.uint8))[: len(fresh)]
        c["fresh_split_accuracy"] = [float(right[p].mean()) for p in parts]
        c["fresh_accuracy"] = float(right.mean())

    test_path = work / "test10k.jsonl"
    tests = cached(test_path)
    n_cached_tests = len(tests)
    retrained = []
    for r in result["retrain"]:
        spec = ArchSpec.from_dict(r["spec"])
        by_seed = []
        for seed in r["seeds"]:
            cfg = dataclasses.replace(N.recipe(ns, r["epochs"]), seed=seed)
            run = N.scratch_dir(work, "retrain", spec, cfg, len(train))
            if run.name not in tests:
                model = T.load_weights(space.build(spec, num_classes=10, input_shape=N.SHAPE), run / "model.pt")
                tests[run.name] = {"key": run.name, "accuracy": float(T.evaluate(model, test10k, batch_size=64)
                                                                      ["accuracy"])}
                append(test_path, tests[run.name])
            by_seed.append(tests[run.name]["accuracy"])
        c = cands[spec.to_json()]
        retrained.append({k: r[k] for k in ("name", "family", "selected", "proxy_accuracy", "predicted_latency_ms",
                                            "test_accuracy_by_seed", "val_accuracy_by_seed") if k in r}
                         | {"fresh_proxy": c["fresh_accuracy"], "test10k_by_seed": by_seed,
                            "test10k": float(np.mean(by_seed)), "spec": r["spec"]})
    doc = {"benchmark": "nas_proxy_noise", "result": N.repo_relative(str(args.result)),
           "settings": {"splits": args.splits, "split_size": args.split_size, "top_per_search": args.top_per_search,
                        "bn_batches": s["bn_batches"], "work_dir": N.repo_relative(str(work))},
           "fresh_images": len(fresh), "subset_images_excluded": overlap, "test_images": len(test10k),
           "candidates": list(cands.values()), "retrained": retrained, "wall_s": time.perf_counter() - t0,
           "scored_this_run": len(scores) - n_cached_scores, "tested_this_run": len(tests) - n_cached_tests,
           "machine": machine_info()}
    doc["summary"] = summarise(doc, result)
    doc["summary"]["proxy_fit"] = proxy_fit(searches)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out.with_suffix(".json"), doc)
    atomic_write_text(args.out.with_suffix(".md"), markdown(doc))
    print(markdown(doc), flush=True)


def family_label(c: dict[str, Any], name: str) -> str:
    """'MobileNetV2 ×0.75' for a candidate with the role 'family ×0.75'."""
    return f"{name} {next(r for r in c['roles'] if r.startswith('family')).split(' ', 1)[1]}"


def summarise(doc: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    cands = doc["candidates"]
    split_std = [float(np.std(c["fresh_split_accuracy"], ddof=1)) for c in cands]
    binom = [float(np.sqrt(c["fresh_accuracy"] * (1 - c["fresh_accuracy"]) / doc["settings"]["split_size"]))
             for c in cands]
    tops = [c for c in cands if any(" top" in r for r in c["roles"])]
    curse = {}
    by_key = {ArchSpec.from_dict(c["spec"]).to_json(): c for c in cands}
    for v, row in result["methods"].items():
        chosen = [ArchSpec.from_dict(c["spec"]).to_json() for c in row["chosen"] if c]
        pairs = [(by_key[k]["proxy"], by_key[k]["fresh_accuracy"]) for k in chosen if k in by_key]
        curse[v] = {"proxy": float(np.mean([p for p, _ in pairs])), "fresh": float(np.mean([f for _, f in pairs])),
                    "n": len(pairs)}
    fam = [c for c in cands if any(r.startswith("family") for r in c["roles"])]
    rt = list({ArchSpec.from_dict(r["spec"]).to_json(): r for r in doc["retrained"] if not r["family"]}.values())
    target = [r["test10k_by_seed"][0] for r in rt]
    tau = {"proxy (500 val)": N.kendall([r["proxy_accuracy"] for r in rt], target),
           f"proxy ({doc['fresh_images']} fresh)": N.kendall([r["fresh_proxy"] for r in rt], target)}
    if all(r.get("val_accuracy_by_seed") for r in rt):
        tau["trained val. (500, seed 0)"] = N.kendall([r["val_accuracy_by_seed"][0] for r in rt], target)
    tau["trained test (1,000, seed 0)"] = N.kendall([r["test_accuracy_by_seed"][0] for r in rt], target)
    fam_drop = float(np.mean([c["proxy"] - c["fresh_accuracy"] for c in fam]))
    with_val = [r for r in doc["retrained"] if r.get("val_accuracy_by_seed")]
    val_gap = (float(np.mean([np.mean(r["val_accuracy_by_seed"]) - r["test10k"] for r in with_val]))
               if with_val else None)
    return {"split_std_mean": float(np.mean(split_std)), "binomial_std_mean": float(np.mean(binom)),
            "family_drop_mean": fam_drop, "trained_val_minus_test10k_mean": val_gap,
            "tau_top_proxy_vs_fresh": N.kendall([c["proxy"] for c in tops], [c["fresh_accuracy"] for c in tops]),
            "n_top": len(tops), "winners_curse": curse,
            "family": {family_label(c, result["family_name"]): {"proxy": c["proxy"], "fresh": c["fresh_accuracy"]}
                       for c in fam},
            "tau_vs_test10k_seed0": tau, "n_retrained_candidates": len(rt)}


def markdown(doc: dict[str, Any]) -> str:
    sm, st = doc["summary"], doc["settings"]
    lines = [f"# Proxy and test noise in the HSCoNAS benchmark (`{doc['result']}`)", "",
             f"Same supernet and BatchNorm re-estimation as the search ({st['bn_batches']} batches), re-scored on "
             f"{doc['fresh_images']:,} images of the full CIFAR-10 training set outside the bundled subset "
             f"({doc['subset_images_excluded']:,} excluded), as {st['splits']} splits of {st['split_size']}; "
             f"{len(doc['candidates'])} candidates: each search's {st['top_per_search']} best by proxy, the retrained "
             f"networks and the family. Retrained networks tested on the full {doc['test_images']:,}-image test set. "
             f"Wall {doc['wall_s'] / 60:.1f} min this run on 1 thread ({doc['scored_this_run']} candidates scored and "
             f"{doc['tested_this_run']} networks tested in it; the others' figures came from the work dir's cache).",
             "",
             f"- Proxy noise: the accuracy of one candidate varies by **{100 * sm['split_std_mean']:.2f} points** "
             f"(std) from one {st['split_size']}-image split to the next (binomial expectation "
             f"{100 * sm['binomial_std_mean']:.2f}).",
             f"- Among the searches' top candidates ({sm['n_top']}), the search's own 500-image proxy and the "
             f"{doc['fresh_images']:,}-image one agree with Kendall tau **{sm['tau_top_proxy_vs_fresh']:+.2f}**.",
             "", "Each method's chosen candidates (one per search seed), mean proxy on the search's 500 images "
             "against the same networks on the fresh images; the family (chosen by nobody) alike. The family's drop "
             "is what the 500 images give every network; a chosen network's drop beyond it is the winner's curse of "
             "taking the maximum of noisy scores:", "",
             "| networks | n | proxy, 500 val. (%) | fresh images (%) | drop (pt) | beyond the family's (pt) |",
             "|---|---:|---:|---:|---:|---:|"]
    fd = sm["family_drop_mean"]
    for v, c in sm["winners_curse"].items():
        d = c["proxy"] - c["fresh"]
        lines.append(f"| {v} chosen | {c['n']} | {100 * c['proxy']:.1f} | {100 * c['fresh']:.1f} | {100 * d:+.1f} | "
                     f"{100 * (d - fd):+.1f} |")
    for name, c in sm["family"].items():
        d = c["proxy"] - c["fresh"]
        lines.append(f"| {name} | 1 | {100 * c['proxy']:.1f} | {100 * c['fresh']:.1f} | {100 * d:+.1f} | "
                     f"{100 * (d - fd):+.1f} |")
    lines += ["", "Retrained networks (6 epochs on the subset; test on 1,000 and on 10,000 images, mean over the seeds "
              "each got):", "",
              "| network | proxy 500 (%) | proxy fresh (%) | pred. latency (ms) | test 1,000 (%) | test 10,000 (%) "
              "(by seed) |", "|---|---:|---:|---:|---:|---:|"]
    for r in doc["retrained"]:
        by = ", ".join(f"{100 * a:.1f}" for a in r["test10k_by_seed"])
        mark = " ✓" if r.get("selected") else ""
        lines.append(f"| {r['name']}{mark} | {100 * r['proxy_accuracy']:.1f} | {100 * r['fresh_proxy']:.1f} | "
                     f"{r['predicted_latency_ms']:.3f} | {100 * float(np.mean(r['test_accuracy_by_seed'])):.1f} | "
                     f"{100 * r['test10k']:.1f} ({by}) |")
    fit = sm["proxy_fit"]
    cf = fit["coef_points"]
    lines += ["", f"Least squares of the 500-image proxy over all {fit['n']} candidates the searches scored: "
              f"{cf['latency_ms']:+.2f} points per predicted ms, per layer against k3 {cf['k5_layers']:+.2f} (k5) and "
              f"{cf['k7_layers']:+.2f} (k7), {cf['e6_layers']:+.2f} per e6 layer, {cf['skip_layers']:+.2f} per skip, "
              f"{cf['mean_width']:+.2f} per unit of mean stage width; residual std {fit['residual_std_points']:.2f} "
              "points."]
    if sm["trained_val_minus_test10k_mean"] is not None:
        lines += ["", "Trained networks score on average "
                  f"{100 * sm['trained_val_minus_test10k_mean']:+.1f} points on the 500 validation images against "
                  "the 10,000 test images."]
    lines += ["", f"Kendall tau against seed-0 test accuracy on 10,000 images, over the "
              f"{sm['n_retrained_candidates']} distinct retrained candidates (family excluded):", "",
              "| ranked by | tau |", "|---|---:|"]
    lines += [f"| {k} | {v:+.2f} |" for k, v in sm["tau_vs_test10k_seed0"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
