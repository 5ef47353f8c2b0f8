"""AWQ-style activation-aware scaling (Lin et al., 2023): per input channel scale s = s_x^alpha
(s_x = mean |activation|), alpha grid-searched to minimize the block output error of Q(W*s)/s;
s is folded into the preceding RMSNorm (or up-projection), then an optional per-matrix clipping
ratio search and round-to-nearest."""

from __future__ import annotations

import torch

from devicefit.core import DataError

from ._calib import block_inputs, capture_linear_inputs, run_block
from ._groupq import QuantizedMatrix
from ._model import Block, Llama
from ._quant import QUANTIZERS, _Base, get_linear

__all__ = ["AWQQuantizer"]

# (input-producing module, scaled Linear layers) inside one block; wv -> wo is used only
# without grouped-query attention, as in AWQ, since wo's input channels repeat wv's outputs.
_SCALE_GROUPS = (("attention_norm", ("attention.wq", "attention.wk", "attention.wv")),
                 ("ffn_norm", ("feed_forward.w1", "feed_forward.w3")),
                 ("feed_forward.w3", ("feed_forward.w2",)),
                 ("attention.wv", ("attention.wo",)))


@QUANTIZERS.register("awq")
class AWQQuantizer(_Base):
    """`fit` learns per-channel `scales_` (folded into the copy by `transform`) and `matrices_`."""

    needs_calibration = True

    def fit(self, model: Llama, calib_seqs: list[list[int]] | None = None) -> AWQQuantizer:
        if not calib_seqs:
            raise DataError("calib_seqs: AWQ needs at least one calibration sequence, got none")
        import copy

        self.notes_: list[str] = []
        self.scales_: dict[str, torch.Tensor] = {}
        self.matrices_: dict[str, QuantizedMatrix | None] = {}
        work = copy.deepcopy(model)
        xs = block_inputs(work, calib_seqs)
        for i, blk in enumerate(work.layers):
            for prev, targets in _SCALE_GROUPS:
                if prev == "attention.wv" and work.cfg.n_heads != work.cfg.n_kv_heads:
                    continue
                with capture_linear_inputs(blk, (targets[0],)) as seen:
                    run_block(work, i, xs)
                x = self._subsample(torch.cat(seen[targets[0]]))
                s = self._search_scale(blk, targets, x)
                _fold(blk, prev, targets, s)
                self.scales_[f"layers.{i}.{prev}"] = s
            with capture_linear_inputs(blk) as seen:
                xs = run_block(work, i, xs)
            for short, xi in seen.items():
                name = f"layers.{i}.{short}"
                self.matrices_[name] = self._clip_and_quantize(name, get_linear(work, name).weight,
                                                               self._subsample(torch.cat(xi)))
        return self

    def _subsample(self, x: torch.Tensor) -> torch.Tensor:
        n = self.config.max_calib_tokens
        if x.shape[0] <= n:
            return x
        return x[torch.linspace(0, x.shape[0] - 1, n).long()]

    def _rtn(self, w: torch.Tensor) -> torch.Tensor:
        qm = self._quantize_one("weight", w, note=False)
        return qm.dequantize() if qm is not None else w

    @torch.no_grad()
    def _search_scale(self, blk: Block, targets: tuple[str, ...], x: torch.Tensor) -> torch.Tensor:
        ws = [blk.get_submodule(t).weight for t in targets]
        ref = torch.cat([x @ w.T for w in ws], dim=1)
        s_x = x.abs().mean(0).clamp(min=1e-8)
        best, best_s = float("inf"), torch.ones_like(s_x)
        for k in range(self.config.awq_grid):
            s = s_x.pow(k / self.config.awq_grid)
            s = s / (s.max() * s.min()).sqrt()
            out = torch.cat([x @ (self._rtn(w * s) / s).T for w in ws], dim=1)
            err = float((out - ref).pow(2).mean())
            if err < best:
                best, best_s = err, s
        return best_s

    @torch.no_grad()
    def _clip_and_quantize(self, name: str, w: torch.Tensor, x: torch.Tensor) -> QuantizedMatrix | None:
        """RTN, each (row, group) range shrunk by the ratio in {1, 0.95, ..., 0.5} that minimizes
        that group's share of the output error mean_t (x_g . (Q(w_g) - w_g))^2 (AWQ's auto-clip)."""
        qm = self._quantize_one(name, w)
        if qm is None or not self.config.awq_clip:
            return qm
        grid = self.config.grid
        for j, (a, b) in enumerate(qm.bounds):
            wg, xg = w[:, a:b].float(), x[:, a:b]
            d, m = qm.d[:, j:j + 1], qm.m[:, j:j + 1]
            best = (xg @ (grid.fake(wg, d, m) - wg).T).pow(2).mean(0)
            for r in torch.arange(0.95, 0.49, -0.05).tolist():
                dr, mr = grid.params(wg * r)
                err = (xg @ (grid.fake(wg, dr, mr) - wg).T).pow(2).mean(0)
                better = (err < best)[:, None]
                d, m, best = torch.where(better, dr, d), torch.where(better, mr, m), torch.minimum(err, best)
            qm.d[:, j:j + 1], qm.m[:, j:j + 1] = d, m
            qm.codes[:, a:b] = grid.codes(wg, d, m)
        return qm

    def _apply_extra(self, model: Llama) -> None:
        with torch.no_grad():
            for key, s in self.scales_.items():
                _, i, prev = key.split(".", 2)
                blk = model.layers[int(i)]
                targets = next(t for p, t in _SCALE_GROUPS if p == prev)
                _fold(blk, prev, targets, s)


@torch.no_grad()
def _fold(blk: Block, prev: str, targets: tuple[str, ...], s: torch.Tensor) -> None:
    """x -> x / s in the producing module, W -> W * s in the consumers: the function is unchanged."""
    src = blk.get_submodule(prev)
    if isinstance(src, torch.nn.Linear):
        src.weight.div_(s[:, None])
    else:
        src.weight.div_(s)
    for t in targets:
        blk.get_submodule(t).weight.mul_(s)


@QUANTIZERS.register("awq-gptq")
class AWQGPTQQuantizer(_Base):
    """AWQ's channel scales folded in first, then GPTQ on the rescaled matrices."""

    needs_calibration = True

    def fit(self, model: Llama, calib_seqs: list[list[int]] | None = None) -> AWQGPTQQuantizer:
        import copy
        from dataclasses import replace

        from ._gptq import GPTQQuantizer

        self.awq_ = AWQQuantizer(replace(self.config, awq_clip=False)).fit(model, calib_seqs)
        scaled = copy.deepcopy(model)
        self.awq_._apply_extra(scaled)
        gptq = GPTQQuantizer(self.config).fit(scaled, calib_seqs)
        self.matrices_, self.notes_ = gptq.matrices_, gptq.notes_
        return self

    def _apply_extra(self, model: Llama) -> None:
        self.awq_._apply_extra(model)
