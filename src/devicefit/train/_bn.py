"""BatchNorm re-estimation: the statistics a sub-network of a weight-sharing supernet needs before it is
scored (the shared running statistics belong to the mixture of paths trained, not to this one)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from devicefit.core import check_positive
from devicefit.data import ArrayDataset, to_float_tensor

__all__ = ["recalibrate_bn_"]


def recalibrate_bn_(model: nn.Module, ds: ArrayDataset, *, batches: int = 4, batch_size: int = 128,
                    seed: int = 0) -> nn.Module:
    """Reset every BatchNorm's running statistics of `model` in place and re-estimate them as the plain average
    over `batches` batches of `ds` (seeded random examples, no augmentation, no gradients); returns `model`
    in eval mode. A model without BatchNorm is returned unchanged (in eval mode)."""
    check_positive("batches", batches)
    check_positive("batch_size", batch_size)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if norms:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average: every batch counts equally
        order = np.random.default_rng(seed).permutation(len(ds))
        model.train()
        with torch.no_grad():
            for b in range(batches):
                idx = order[b * batch_size:(b + 1) * batch_size]
                if len(idx) == 0:
                    break
                model(to_float_tensor(ds, ds.x[np.sort(idx)]))
    return model.eval()
