"""GPTQ (Frantar et al., 2022): quantize one column at a time and spread its error over the
not-yet-quantized columns with the inverse Hessian H = 2 X^T X of the layer inputs (Alg. 1),
block by block through the model, each block calibrated on the previous quantized blocks' outputs."""

from __future__ import annotations

import torch

from devicefit.core import DataError

from ._calib import block_inputs, capture_linear_inputs, run_block
from ._groupq import QuantizedMatrix, group_bounds, search_params
from ._model import Llama
from ._quant import QUANTIZERS, WeightQuantConfig, _Base, get_linear

__all__ = ["GPTQQuantizer", "gptq_matrix"]

_SEQUENTIAL = (("attention.wq", "attention.wk", "attention.wv"), ("attention.wo",),
               ("feed_forward.w1", "feed_forward.w3"), ("feed_forward.w2",))
_RATIOS = tuple(1 - 0.02 * k for k in range(1, 26))  # range shrink candidates, 0.98 .. 0.50


def _hessian(xs: list[torch.Tensor]) -> torch.Tensor:
    x = torch.cat(xs).double()
    return 2 * x.T @ x / x.shape[0]


def _inverse_cholesky(H: torch.Tensor, damp: float, name: str) -> torch.Tensor:
    """Upper Cholesky factor of H^-1 after dampening by `damp` x mean diagonal (Eq. 5 and §4)."""
    H = H.clone()
    H += damp * torch.mean(torch.diag(H)) * torch.eye(H.shape[0], dtype=H.dtype)
    try:
        L = torch.linalg.cholesky(H)
    except torch.linalg.LinAlgError as err:
        raise DataError(f"{name}: calibration Hessian is not positive definite; raise damp") from err
    return torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)


def gptq_matrix(w: torch.Tensor, H: torch.Tensor, config: WeightQuantConfig, name: str,
                ragged: bool = False) -> QuantizedMatrix:
    """GPTQ one weight matrix `w` (out, in) given the Hessian `H` (in, in) of its inputs.

    Groups stay contiguous in the original column order (so the result packs into GGUF blocks);
    a group's scale/min are fixed when its first column is reached, from the group's weights as
    updated so far, or with `static_groups` from the original weights up front.
    """
    grid = config.grid
    W = w.detach().double().clone()
    H = H.clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    perm = torch.argsort(torch.diag(H), descending=True) if config.act_order else torch.arange(W.shape[1])
    Hinv = _inverse_cholesky(H[perm][:, perm], config.damp, name)
    bounds = group_bounds(W.shape[1], grid, ragged, name)
    group_of = torch.empty(W.shape[1], dtype=torch.long)
    for j, (a, b) in enumerate(bounds):
        group_of[a:b] = j
    d = torch.full((W.shape[0], len(bounds)), float("nan"))
    m = torch.zeros_like(d)
    codes = torch.empty(W.shape, dtype=torch.uint8)
    if config.static_groups:  # every group's scale/min from the original weights, before any update
        for j, (a, b) in enumerate(bounds):
            dd, mm = search_params(W[:, a:b].float(), grid, _RATIOS if config.clip_search else ())
            d[:, j], m[:, j] = dd[:, 0], mm[:, 0]
    Wp = W[:, perm]
    for i1 in range(0, Wp.shape[1], config.block_size):
        i2 = min(i1 + config.block_size, Wp.shape[1])
        err = torch.zeros(Wp.shape[0], i2 - i1, dtype=W.dtype)
        for i in range(i1, i2):
            col, g = int(perm[i]), int(group_of[perm[i]])
            if torch.isnan(d[0, g]):
                a, b = bounds[g]
                cur = Wp[:, torch.argsort(perm)][:, a:b].float()
                dd, mm = search_params(cur, grid, _RATIOS if config.clip_search else ())
                d[:, g], m[:, g] = dd[:, 0], mm[:, 0]
            w_col = Wp[:, i].float()[:, None]
            c = grid.codes(w_col, d[:, g:g + 1], m[:, g:g + 1])
            q = grid.values(c, d[:, g:g + 1], m[:, g:g + 1])[:, 0].double()
            codes[:, col] = c[:, 0]
            e = (Wp[:, i] - q) / Hinv[i, i]
            Wp[:, i:i2] -= e[:, None] * Hinv[i, i:i2][None, :]
            err[:, i - i1] = e
        Wp[:, i2:] -= err @ Hinv[i1:i2, i2:]
    return QuantizedMatrix(grid, codes, d, m, bounds)


@QUANTIZERS.register("gptq")
class GPTQQuantizer(_Base):
    """GPTQ over every block matrix; `fit` needs calibration sequences (BOS-led token lists)."""

    needs_calibration = True

    def fit(self, model: Llama, calib_seqs: list[list[int]] | None = None) -> GPTQQuantizer:
        if not calib_seqs:
            raise DataError("calib_seqs: GPTQ needs at least one calibration sequence, got none")
        self.notes_: list[str] = []
        self.matrices_: dict[str, QuantizedMatrix | None] = {}
        work = _working_copy(model)
        xs = block_inputs(work, calib_seqs)
        for i, blk in enumerate(work.layers):
            # "true sequential": each group's inputs come from the already-quantized groups before it
            for group in _SEQUENTIAL:
                with capture_linear_inputs(blk, group[:1]) as seen:
                    run_block(work, i, xs)
                H = _hessian(seen[group[0]])  # the layers of a group share their input
                for short in group:
                    name = f"layers.{i}.{short}"
                    self.matrices_[name] = self._gptq_one(name, get_linear(work, name), H)
            xs = run_block(work, i, xs)  # the next block sees this block's quantized outputs
        return self

    def _gptq_one(self, name: str, lin: torch.nn.Linear, H: torch.Tensor) -> QuantizedMatrix | None:
        grid, cols = self.config.grid, lin.weight.shape[1]
        if grid.group_size and cols % grid.group_size and self.config.on_ragged == "keep":
            self.notes_.append(f"{name}: row length {cols} is not a multiple of {grid.group_size}; kept in fp16")
            return None
        qm = gptq_matrix(lin.weight, H, self.config, name, ragged=self.config.on_ragged == "ragged")
        with torch.no_grad():
            lin.weight.copy_(qm.dequantize())
        return qm


def _working_copy(model: Llama) -> Llama:
    import copy

    return copy.deepcopy(model)
