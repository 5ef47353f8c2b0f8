"""Tokenizers: llama2.c's score-merge SentencePiece format (`tok512.bin`) and GGUF vocabularies
(SentencePiece scores or GPT-2 byte-level BPE merges), behind one `encode`/`decode` interface."""

from __future__ import annotations

import itertools
import os
import re
import struct
from pathlib import Path
from typing import Protocol

from devicefit.core import DataError

__all__ = ["BpeTokenizer", "SentencePieceTokenizer", "Tokenizer", "load_llama2c_tokenizer"]


class Tokenizer(Protocol):
    """`encode(text, bos)` -> ids; `decode(ids)` -> text; `bos_id`, `eos_id`, `vocab_size`."""

    bos_id: int
    eos_id: int
    vocab_size: int

    def encode(self, text: str, bos: bool = True) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


class SentencePieceTokenizer:
    """Greedy highest-score pair merging as in llama2.c `run.c` (byte fallback for unknown chars).

    Pieces carry a real leading space (SentencePiece's U+2581 already replaced). Merges never
    cross a space, so each space-led chunk is merged independently.
    """

    def __init__(self, pieces: list[bytes], scores: list[float], bos_id: int = 1, eos_id: int = 2,
                 add_space_prefix: bool = True) -> None:
        self.pieces, self.scores = pieces, scores
        self.bos_id, self.eos_id, self.vocab_size = bos_id, eos_id, len(pieces)
        self.add_space_prefix = add_space_prefix
        self._ids = {p: i for i, p in reversed(list(enumerate(pieces)))}
        self._byte_ids = {}
        for i, p in enumerate(pieces):
            m = _BYTE_PIECE.match(p.decode("utf-8", "replace"))
            if m:
                self._byte_ids[int(m.group(1), 16)] = i

    def encode(self, text: str, bos: bool = True) -> list[int]:
        if self.add_space_prefix and text:
            text = " " + text
        ids = [self.bos_id] if bos else []
        for chunk in re.findall(r" ?[^ ]+| ", text):
            ids += self._merge(self._chars(chunk))
        return ids

    def _chars(self, chunk: str) -> list[int]:
        out = []
        for ch in chunk:
            b = ch.encode("utf-8")
            if b in self._ids:
                out.append(self._ids[b])
            else:
                out += [self._byte_ids.get(x, 0) for x in b]
        return out

    def _merge(self, ids: list[int]) -> list[int]:
        while True:
            best, best_i, best_id = -1e30, -1, -1
            for i in range(len(ids) - 1):
                j = self._ids.get(self.pieces[ids[i]] + self.pieces[ids[i + 1]])
                if j is not None and self.scores[j] > best:
                    best, best_i, best_id = self.scores[j], i, j
            if best_i < 0:
                return ids
            ids[best_i:best_i + 2] = [best_id]

    def decode(self, ids: list[int]) -> str:
        out = bytearray()
        prev = None
        for i in ids:
            if i in (self.bos_id, self.eos_id):
                prev = i
                continue
            piece = self.pieces[i]
            m = _BYTE_PIECE.match(piece.decode("utf-8", "replace"))
            if m:
                piece = bytes([int(m.group(1), 16)])
            elif (prev == self.bos_id or not out) and self.add_space_prefix and piece.startswith(b" "):
                piece = piece[1:]
            out += piece
            prev = i
        return out.decode("utf-8", "replace")


def load_llama2c_tokenizer(path: str | os.PathLike[str], vocab_size: int | None = None) -> SentencePieceTokenizer:
    """Read llama2.c's `tokenizer.bin` format (max_token_length, then score/len/bytes per token)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"tokenizer file {str(path)!r} does not exist")
    raw = path.read_bytes()
    pieces, scores, pos = [], [], 4
    try:
        while pos < len(raw):
            score, n = struct.unpack_from("<fi", raw, pos)
            if n < 0 or pos + 8 + n > len(raw):
                raise struct.error(f"piece length {n} at byte {pos}")
            pieces.append(raw[pos + 8:pos + 8 + n])
            scores.append(score)
            pos += 8 + n
    except struct.error as err:
        raise DataError(f"{path}: truncated or corrupt llama2.c tokenizer ({err})") from err
    if vocab_size is not None and len(pieces) != vocab_size:
        raise DataError(f"{path}: expected {vocab_size} tokens, got {len(pieces)}")
    return SentencePieceTokenizer(pieces, scores)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable-character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = list(bs)
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


# GPT-2 pre-tokenizer; `[^\W\d_]` stands in for \p{L} and `\d` for \p{N} (stdlib `re` has no
# Unicode classes), exact on ASCII text. SmolLM ("smollm" pre) first splits digits one by one.
_GPT2_SPLIT = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d| ?[^\s\w]+|\s+(?!\S)|\s+""")


class BpeTokenizer:
    """GPT-2 byte-level BPE from a vocabulary and ranked merges (GGUF `tokenizer.ggml.model = gpt2`)."""

    def __init__(self, tokens: list[str], merges: list[str], bos_id: int, eos_id: int,
                 add_bos: bool = False) -> None:
        self.tokens, self.bos_id, self.eos_id = tokens, bos_id, eos_id
        self.vocab_size, self.add_bos = len(tokens), add_bos
        self._ids = {t: i for i, t in enumerate(tokens)}
        self._ranks = {tuple(m.split(" ", 1)): r for r, m in enumerate(merges)}
        self._b2u = _bytes_to_unicode()
        self._u2b = {u: b for b, u in self._b2u.items()}
        self._cache: dict[str, list[int]] = {}

    def encode(self, text: str, bos: bool = True) -> list[int]:
        """Token ids; BOS is prepended only when `bos` and the model asks for it (`add_bos`)."""
        ids = [self.bos_id] if bos and self.add_bos else []
        for word in _GPT2_SPLIT.findall(text):
            if word not in self._cache:
                self._cache[word] = self._bpe("".join(self._b2u[b] for b in word.encode("utf-8")))
            ids += self._cache[word]
        return ids

    def _bpe(self, word: str) -> list[int]:
        parts = list(word)
        while len(parts) > 1:
            ranked = [(self._ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(itertools.pairwise(parts))]
            rank, i = min(ranked)
            if rank == 1 << 30:
                break
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        return [self._ids[p] if p in self._ids else self._unknown(p) for p in parts]

    def _unknown(self, piece: str) -> int:
        raise DataError(f"BPE piece {piece!r} is not in the vocabulary (incomplete GGUF tokenizer)")

    def decode(self, ids: list[int]) -> str:
        text = "".join(self.tokens[i] for i in ids if i not in (self.bos_id, self.eos_id))
        return bytes(self._u2b.get(c, ord("?")) for c in text).decode("utf-8", "replace")
