"""LSQ quantization-aware training (fake quantization, learned steps) and mixed precision from measured
per-layer sensitivity under a model-size budget."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from devicefit.compress import (
    LSQConfig,
    LSQFakeQuant,
    LSQQuantizer,
    QuantWrapper,
    choose_bit_widths,
    layer_sensitivity,
    quant_layers,
    weight_bytes,
)
from devicefit.core import BudgetError, ConfigError, DataError, NotFittedError
from devicefit.models import build, default_spec

SHAPE = (3, 16, 16)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return build(default_spec("resnet8", input_shape=SHAPE, width_mult=0.5)).eval()


def _batch(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, *SHAPE, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("signed", [True, False])
def test_fake_quant_outputs_lie_on_the_grid_and_pass_gradients(bits: int, signed: bool) -> None:
    q = LSQFakeQuant(bits, signed)
    x = torch.randn(1000, requires_grad=True)
    q.init_(x.detach())
    y = q(x)
    levels = torch.unique(torch.round(y.detach() / q.step.detach()))
    assert len(levels) <= 2 ** bits and levels.min() >= q.qn and levels.max() <= q.qp
    y.pow(2).sum().backward()
    assert q.step.grad is not None and q.step.grad.abs().item() > 0
    assert x.grad is not None and (x.grad != 0).any()


def test_lsq_wraps_every_layer_keeping_first_and_last_at_8_bits() -> None:
    x, _ = _batch()
    q = LSQQuantizer(LSQConfig(weight_bits=4, act_bits=4)).fit(_model(), x)
    names = quant_layers(_model())
    assert q.bits_[names[0]] == q.bits_[names[-1]] == 8 and {q.bits_[n] for n in names[1:-1]} == {4}
    wrappers = [m for m in q.model.modules() if isinstance(m, QuantWrapper)]
    assert len(wrappers) == len(names)
    assert wrappers[0].act_q is not None and wrappers[0].act_q.signed  # normalised image input
    assert not wrappers[1].act_q.signed  # after a ReLU


def test_qat_training_recovers_the_loss_of_2_bit_quantization() -> None:
    torch.set_num_threads(1)
    x, y = _batch(32)
    model = _model()
    with torch.no_grad():  # a 'trained' float model: its own predictions are the labels
        y = model(x).argmax(1)

    losses: list[float] = []

    def finetune(net: nn.Module) -> nn.Module:
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        net.train()
        for _ in range(20):
            opt.zero_grad()
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return net

    q = LSQQuantizer(LSQConfig(weight_bits=2, act_bits=2, first_last_bits=None)).fit(model, x, finetune)
    assert losses[-1] < 0.7 * losses[0]
    steps_moved = [w.weight_q.step for w in q.model.modules() if isinstance(w, QuantWrapper)]
    assert steps_moved and all(s.requires_grad for s in steps_moved)


@pytest.mark.parametrize("bits", [1, 9, 16])
def test_bit_widths_outside_2_8_are_config_errors(bits: int) -> None:
    with pytest.raises(ConfigError, match=f"got {bits}"):
        LSQConfig(weight_bits=bits)


def test_bits_for_an_unknown_layer_and_bad_batches_are_clear_errors() -> None:
    x, _ = _batch(4)
    with pytest.raises(ConfigError, match="nope"):
        LSQQuantizer(LSQConfig(bits_per_layer={"nope": 4})).fit(_model(), x)
    with pytest.raises(DataError, match=r"\(4, 1, 8, 8\)"):
        LSQQuantizer().fit(_model(), torch.zeros(4, 1, 8, 8))
    with pytest.raises(NotFittedError):
        _ = LSQQuantizer().model


def test_sensitivity_grows_as_bits_shrink() -> None:
    x, _ = _batch()
    sens = layer_sensitivity(_model(), x, bits=(2, 4, 8))
    assert set(sens) == set(quant_layers(_model()))
    total = {b: sum(s[b] for s in sens.values()) for b in (2, 4, 8)}
    assert total[2] > total[4] > total[8] >= -1e-6  # KL of identical outputs: 0 up to rounding


def test_mixed_precision_meets_the_budget_and_protects_the_sensitive_layer() -> None:
    model = _model()
    names = quant_layers(model)
    sens = {n: {2: 1.0, 4: 0.1, 8: 0.0} for n in names}
    sens[names[3]] = {2: 100.0, 4: 50.0, 8: 0.0}  # one fragile layer
    full = weight_bytes(model, {n: 8 for n in names})
    choice = choose_bit_widths(model, sens, budget_bytes=0.5 * full)
    assert weight_bytes(model, choice) <= 0.5 * full
    assert choice[names[3]] == 8 and min(choice.values()) < 8
    with pytest.raises(BudgetError, match="below the smallest reachable"):
        choose_bit_widths(model, sens, budget_bytes=0.1 * full)
