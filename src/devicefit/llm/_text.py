"""Evaluation and calibration text: TinyStories validation stories from the data dir (or the
bundled slice), mojibake filtering/repair, the eval/calibration split and token sequences."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from devicefit.core import ConfigError, DataError, check_choice
from devicefit.data import resolve_data_dir

from ._tokenizer import Tokenizer

__all__ = ["CALIB_FROM_INDEX", "Corpus", "clean_stories", "encode_texts", "load_stories", "split_eval_calib"]

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
STORIES_SUBDIR = "tinystories-valid-1k"
STORIES_FILE = "tinystories_valid_first1000.txt"
SEPARATOR = "\n<|endoftext|>\n"
# Stories [0, 500) are for evaluation, [500, 1000) for calibration: never the same story in both.
CALIB_FROM_INDEX = 500


@dataclass(frozen=True)
class Corpus:
    """Stories with their index in the source file and where they came from."""

    texts: tuple[str, ...]
    indices: tuple[int, ...]
    source: str

    def select(self, keep: list[bool], note: str) -> Corpus:
        pairs = [(t, i) for t, i, k in zip(self.texts, self.indices, keep, strict=True) if k]
        return Corpus(tuple(t for t, _ in pairs), tuple(i for _, i in pairs), f"{self.source}; {note}")


def load_stories(data_dir: str | os.PathLike[str] | None = None) -> Corpus:
    """All 1,000 stories from `<data_dir>/tinystories-valid-1k`, else the bundled 28-story slice
    (stories 0-15 and the last 12 ASCII stories of 988-999)."""
    root = resolve_data_dir(data_dir)
    if root is None:
        rows = [json.loads(line) for line in (BUNDLED_DIR / "tinystories_sample.jsonl").read_text("utf-8").splitlines()]
        return Corpus(tuple(r["text"] for r in rows), tuple(r["index"] for r in rows),
                      "bundled slice of tinystories-valid-1k")
    path = root / STORIES_SUBDIR / STORIES_FILE
    if not path.is_file():
        raise DataError(f"stories file {str(path)!r} not found in the data dir "
                        f"(expected {STORIES_SUBDIR}/{STORIES_FILE})")
    texts = [s.strip() for s in path.read_text("utf-8").split(SEPARATOR) if s.strip()]
    return Corpus(tuple(texts), tuple(range(len(texts))), str(path))


_MOJIBAKE = (("\u00e2\u20ac\u0153", '"'), ("\u00e2\u20ac\u009d", '"'), ("\u00e2\u20ac\u2122", "'"),
             ("\u00e2\u20ac\u02dc", "'"), ("\u00e2\u20ac\u00a6", "..."), ("\u00e2\u20ac\u201d", "-"),
             ("\u00e2\u20ac\u201c", "-"), ("\u00e2\u20ac", '"'))  # bare: the closing quote lost its 3rd byte
_CURLY = {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-", "\u2026": "..."}


def _repair(text: str) -> str:
    """Replace UTF-8-read-as-cp1252 punctuation ("â€œ", "â€™", ...) and curly quotes by ASCII."""
    for bad, good in _MOJIBAKE:
        text = text.replace(bad, good)
    return "".join(_CURLY.get(c, c) for c in text)


def clean_stories(corpus: Corpus, policy: str = "filter") -> Corpus:
    """`filter`: drop stories with any non-ASCII character (the 51 mojibake stories of the 1,000);
    `repair`: replace the mojibake punctuation and curly quotes by ASCII (other non-ASCII stays);
    `keep`: leave as is."""
    check_choice("policy", policy, ("filter", "repair", "keep"))
    if policy == "keep":
        return corpus
    if policy == "filter":
        return corpus.select([t.isascii() for t in corpus.texts], "non-ASCII stories filtered")
    texts = tuple(t if t.isascii() else _repair(t) for t in corpus.texts)
    return Corpus(texts, corpus.indices, f"{corpus.source}; mojibake repaired")


def split_eval_calib(corpus: Corpus, n_eval: int, n_calib: int) -> tuple[Corpus, Corpus]:
    """First `n_eval` stories below `CALIB_FROM_INDEX` and last `n_calib` from it on (0 = all)."""
    ev = corpus.select([i < CALIB_FROM_INDEX for i in corpus.indices], f"eval stories < {CALIB_FROM_INDEX}")
    ca = corpus.select([i >= CALIB_FROM_INDEX for i in corpus.indices], f"calibration stories >= {CALIB_FROM_INDEX}")
    ev = Corpus(ev.texts[:n_eval or None], ev.indices[:n_eval or None], ev.source)
    k = len(ca.texts) - n_calib if n_calib else 0
    ca = Corpus(ca.texts[max(k, 0):], ca.indices[max(k, 0):], ca.source)
    return ev, ca


def encode_texts(tokenizer: Tokenizer, texts: tuple[str, ...] | list[str], max_len: int,
                 what: str = "texts") -> list[list[int]]:
    """Token ids of each text with BOS prepended (if the tokenizer uses one; otherwise the first
    token is context only), truncated to `max_len`; texts of < 2 tokens are
    dropped. Raises `DataError` when nothing is left (e.g. empty calibration text)."""
    if max_len < 2:
        raise ConfigError(f"max_len must be >= 2, got {max_len}")
    seqs = [ids[:max_len] for ids in (tokenizer.encode(t, bos=True) for t in texts if t.strip())]
    seqs = [s for s in seqs if len(s) >= 2]
    if not seqs:
        raise DataError(f"{what}: expected at least one non-empty text, got {len(texts)} text(s) with no tokens")
    return seqs
