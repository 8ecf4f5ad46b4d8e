"""Attack and defense metrics as pure functions (the classes in this package call them)."""
from __future__ import annotations

import torch
from torch import Tensor


def attack_success_rate(preds: Tensor, targets: Tensor, source: int | None, target: int | None) -> Tensor:
    """Share of test samples of class ``source`` predicted as ``target``.

    ``source=None`` (flip-all): the share of all samples misclassified. ``target=None``: the share of
    ``source`` samples predicted as anything else.
    """
    hits, total = attack_success_counts(preds, targets, source, target)
    return hits / total.clamp_min(1)


def attack_success_counts(preds: Tensor, targets: Tensor, source: int | None,
                          target: int | None) -> tuple[Tensor, Tensor]:
    """Numerator and denominator of :func:`attack_success_rate`, to accumulate over batches."""
    preds, targets = preds.reshape(-1), targets.reshape(-1).to(preds.dtype)
    if source is None:
        return (preds != targets).sum().float(), torch.tensor(float(targets.numel()))
    mask = targets == source
    wrong = preds[mask] == target if target is not None else preds[mask] != source
    return wrong.sum().float(), mask.sum().float()
