"""Shared fixtures: a trained-looking source run directory (spec.json + model.pt) for the compression tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from devicefit.models import build, default_spec
from devicefit.train import save_weights


@pytest.fixture(scope="session")
def make_source_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """make(family, **params) -> a run directory holding spec.json and model.pt of that zoo model with random
    weights (seed 0): what a compress job reads from a finished train run."""

    def make(family: str, **params: Any) -> Path:
        run = tmp_path_factory.mktemp(f"src-{family}")
        spec = default_spec(family, **params)
        torch.manual_seed(0)
        save_weights(build(spec), run / "model.pt")
        (run / "spec.json").write_text(json.dumps(spec.to_dict()))
        return run

    return make
