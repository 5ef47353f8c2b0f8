"""Block-by-block calibration plumbing shared by GPTQ and AWQ: the inputs entering each block
for every calibration sequence, and the inputs each of the block's Linear layers sees."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ._model import Block, Llama

__all__ = ["BLOCK_LINEARS", "block_inputs", "capture_linear_inputs", "run_block"]

BLOCK_LINEARS = ("attention.wq", "attention.wk", "attention.wv", "attention.wo",
                 "feed_forward.w1", "feed_forward.w2", "feed_forward.w3")


@torch.no_grad()
def block_inputs(model: Llama, seqs: list[list[int]]) -> list[torch.Tensor]:
    """Embeddings (1, T, dim) of each calibration sequence: the inputs of block 0."""
    return [model.tok_embeddings(torch.tensor([s])) for s in seqs]


@torch.no_grad()
def run_block(model: Llama, i: int, xs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Outputs of block `i` for inputs `xs` (one sequence each, no cache)."""
    blk: Block = model.layers[i]
    out = []
    for x in xs:
        T = x.shape[1]
        out.append(blk(x, model.rope_cos[:T], model.rope_sin[:T], None, i, 0, model.kv_transform))
    return out


@contextmanager
def capture_linear_inputs(block: Block, names: tuple[str, ...] = BLOCK_LINEARS,
                          ) -> Iterator[dict[str, list[torch.Tensor]]]:
    """While active, every forward of `block` appends each named Linear's input, as (T, in)."""
    seen: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    handles = []
    for n in names:
        def hook(_mod, args, _out, n=n):  # type: ignore[no-untyped-def]
            seen[n].append(args[0].detach().reshape(-1, args[0].shape[-1]))
        handles.append(block.get_submodule(n).register_forward_hook(hook))
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()
