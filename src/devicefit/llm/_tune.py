"""End-to-end tuning of the stored group scales/mins of a quantized model (the integer codes stay
fixed, as in EfficientQAT's E2E-QP / PEQA): minimize KL(unquantized || quantized) on calibration
sequences with Adam; the tuned d/m are rounded to fp16, so the file format does not change."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.func import functional_call

from devicefit.core import ConfigError, DataError

from ._eval import pad_batch
from ._groupq import QuantizedMatrix
from ._model import Llama

__all__ = ["ScaleTuneConfig", "tune_scales_"]


@dataclass(frozen=True)
class ScaleTuneConfig:
    """`epochs` passes over the calibration sequences in batches of `batch_size`; Adam at `lr` on
    relative changes (d = d0 (1 + a), m = m0 + b d0); `seed` orders the batches. `tune_norms`
    also trains the RMSNorm gains (float parameters the formats keep in float anyway)."""

    epochs: int = 8
    batch_size: int = 8
    lr: float = 2e-3
    seed: int = 0
    tune_norms: bool = False

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")


def _group_index(qm: QuantizedMatrix) -> torch.Tensor:
    idx = torch.empty(qm.codes.shape[1], dtype=torch.long)
    for j, (a, b) in enumerate(qm.bounds):
        idx[a:b] = j
    return idx


@torch.no_grad()
def _teacher(reference: Llama, seqs: list[list[int]], size: int) -> list[torch.Tensor]:
    """The reference's next-token log-probabilities per sequence, (len - 1, vocab), in fp16."""
    out = []
    for s in range(0, len(seqs), size):
        tok, valid = pad_batch(seqs[s:s + size])
        logp = F.log_softmax(reference(tok)[:, :-1].float(), -1)
        out += [logp[r][valid[r]].half() for r in range(len(tok))]
    return out


def tune_scales_(model: Llama, matrices: dict[str, QuantizedMatrix | None], reference: Llama,
                 calib_seqs: list[list[int]], config: ScaleTuneConfig = ScaleTuneConfig()) -> list[float]:
    """Tune every matrix's `d`/`m` in place (codes untouched) so `model` (holding the dequantized
    weights of `matrices`) matches `reference` on `calib_seqs`; rewrites the model's weights from
    the tuned matrices. Returns the mean KL (nats/token) per epoch. `reference` is not changed."""
    if not calib_seqs or any(len(s) < 2 for s in calib_seqs):
        raise DataError("calib_seqs: scale tuning needs sequences of >= 2 tokens, got none or shorter")
    live = {n: qm for n, qm in matrices.items() if qm is not None}
    idx = {n: _group_index(qm) for n, qm in live.items()}
    codes = {n: qm.codes.float() for n, qm in live.items()}
    d0 = {n: qm.d.half().float() for n, qm in live.items()}
    m0 = {n: qm.m.half().float() for n, qm in live.items()}
    a = {n: torch.zeros_like(d0[n], requires_grad=True) for n in live}
    b = {n: torch.zeros_like(d0[n], requires_grad=True) for n in live}
    uses_m = {n: bool(qm.grid.n_params > 1) for n, qm in live.items()}
    params = list(a.values()) + [b[n] for n in live if uses_m[n]]
    gen = torch.Generator().manual_seed(config.seed)
    reference.eval()
    model.eval()
    teacher = _teacher(reference, calib_seqs, config.batch_size)
    for n, p in model.named_parameters():
        p.requires_grad_(config.tune_norms and n.endswith("norm.weight"))
        if p.requires_grad:
            params.append(p)
    opt = torch.optim.Adam(params, lr=config.lr)

    def weights() -> dict[str, torch.Tensor]:
        out = {}
        for n, qm in live.items():
            d = d0[n] * (1 + a[n])
            m = m0[n] + b[n] * d0[n] if uses_m[n] else m0[n]
            out[f"{n}.weight"] = qm.grid.values(codes[n], d[:, idx[n]], m[:, idx[n]])
        return out

    history = []
    for _ in range(config.epochs):
        tot = ntok = 0.0
        order = torch.randperm(len(calib_seqs), generator=gen).tolist()
        for s in range(0, len(order), config.batch_size):
            pick = order[s:s + config.batch_size]
            tok, valid = pad_batch([calib_seqs[i] for i in pick])
            ref = torch.cat([teacher[i] for i in pick]).float()
            logp = F.log_softmax(functional_call(model, weights(), (tok,))[:, :-1], -1)[valid]
            loss = (ref.exp() * (ref - logp)).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * int(valid.sum())
            ntok += int(valid.sum())
        history.append(tot / ntok)
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        for n, qm in live.items():
            qm.d = (d0[n] * (1 + a[n])).half().float()
            if uses_m[n]:
                qm.m = (m0[n] + b[n] * d0[n]).half().float()
            model.get_submodule(n).weight.copy_(qm.dequantize())
    return history
