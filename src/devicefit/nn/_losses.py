"""Losses shared by training and compression: knowledge distillation (Hinton et al., 2015)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from devicefit.core import check_positive, check_range

__all__ = ["distillation_loss"]


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    alpha: float = 0.5,
    temperature: float = 4.0,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """(1 - alpha) * CE(student, targets) + alpha * T^2 * KL(softmax(t/T) || softmax(s/T)).

    The T^2 factor keeps the soft-target gradient scale independent of T (Hinton et al., eq. 2).
    `student_logits`, `teacher_logits`: (B, K); `targets`: (B,) class indices.
    """
    check_range("alpha", alpha, 0.0, 1.0, inclusive=True)
    check_positive("temperature", temperature)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} must have the same shape")
    hard = F.cross_entropy(student_logits, targets, label_smoothing=label_smoothing)
    if alpha == 0.0:
        return hard
    t = temperature
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits.detach() / t, dim=1),
                    reduction="batchmean", log_target=True) * (t * t)
    return (1.0 - alpha) * hard + alpha * soft
