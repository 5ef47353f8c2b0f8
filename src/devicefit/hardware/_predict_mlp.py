"""`mlp`: a small MLP on the one-hot encoding (LightNAS-style), differentiable so that a search can
back-propagate latency through a soft (relaxed) one-hot."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from devicefit.core import ConfigError

from ._encoding import CellEncoding
from ._predict_base import LatencyPredictor, register_predictor

__all__ = ["LatencyMLP", "MLPPredictor"]


class LatencyMLP(nn.Module):
    """(N, positions·ops) one-hot (hard or soft) → (N,) latency in ms: exp(net(x)·std + mean)."""

    def __init__(self, n_features: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)
        self.register_buffer("log_mean", torch.zeros(()))
        self.register_buffer("log_std", torch.ones(()))

    def normalised(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(-1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.exp(self.normalised(x) * self.log_std + self.log_mean)


@register_predictor("mlp")
class MLPPredictor(LatencyPredictor):
    """MLP on the one-hot, trained on standardised log-latency with full-batch Adam (seeded, CPU,
    deterministic). `predict_onehot_torch(x)` is differentiable in `x`."""

    def __init__(self, hidden: tuple[int, ...] = (128, 128), epochs: int = 300, lr: float = 3e-3,
                 weight_decay: float = 1e-4, seed: int = 0) -> None:
        self.hidden = tuple(hidden)
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.seed = seed

    def _fit(self, enc: CellEncoding, idx: np.ndarray, y_ms: np.ndarray) -> None:
        x = torch.from_numpy(_onehot(enc, idx))
        log_y = np.log(y_ms)
        target = torch.from_numpy((log_y - log_y.mean()) / (log_y.std() + 1e-6)).float()
        with torch.random.fork_rng(devices=[]), _one_thread():
            torch.manual_seed(self.seed)
            module = LatencyMLP(enc.n_features, self.hidden)
            opt = torch.optim.Adam(module.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            for _ in range(self.epochs):
                opt.zero_grad()
                loss = torch.mean((module.normalised(x) - target) ** 2)
                loss.backward()
                opt.step()
        module.log_mean.fill_(float(log_y.mean()))
        module.log_std.fill_(float(log_y.std() + 1e-6))
        self.module_ = module.eval()

    def _predict(self, enc: CellEncoding, idx: np.ndarray) -> np.ndarray:
        with torch.no_grad(), _one_thread():
            return self.module_(torch.from_numpy(_onehot(enc, idx))).double().numpy()

    def torch_module(self) -> LatencyMLP:
        """The fitted module (one-hot → ms); its parameters are shared, not copied."""
        _ = self.encoding_
        return self.module_

    def predict_onehot_torch(self, x: Tensor) -> Tensor:
        """(N, positions·ops) (soft) one-hot → (N,) latency in ms, differentiable in `x`."""
        enc = self.encoding_
        if x.ndim != 2 or x.shape[1] != enc.n_features:
            raise ConfigError(f"x must be (N, {enc.n_features}) for {enc.family}, got {tuple(x.shape)}")
        return self.module_(x.float())

    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {k: v.tolist() for k, v in self.module_.state_dict().items()}, {}

    def _set_state(self, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        n_features = len(state["net.0.weight"][0])
        module = LatencyMLP(n_features, self.hidden)
        module.load_state_dict({k: torch.tensor(v, dtype=torch.float32) for k, v in state.items()})
        self.module_ = module.eval()

    def _json_params(self) -> dict[str, Any]:
        return {**self.get_params(), "hidden": list(self.hidden)}


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Tiny matrices: one intra-op thread is many times faster than several on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _onehot(enc: CellEncoding, idx: np.ndarray) -> np.ndarray:
    return np.eye(len(enc.ops), dtype=np.float32)[idx].reshape(len(idx), -1)
