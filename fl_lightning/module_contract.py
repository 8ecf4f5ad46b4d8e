"""What the round loop reads from a user's ``LightningModule`` besides ``training_step``: its loss and predictions.

A module may define ``loss(logits, targets)`` and ``predict(logits)``; a plain module gets the
classification defaults below. Engines, evaluation and callbacks import this, never ``models/``.
"""
from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import Tensor, nn


def classification_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy, or BCE with logits when the model has a single output."""
    if logits.dim() == 1 or logits.shape[-1] == 1:
        return F.binary_cross_entropy_with_logits(logits.reshape(-1), targets.reshape(-1).float())
    return F.cross_entropy(logits, targets)


def classification_predict(logits: Tensor) -> Tensor:
    """Arg-max class, or ``logit > 0`` when the model has a single output."""
    if logits.dim() == 1 or logits.shape[-1] == 1:
        return (logits.reshape(-1) > 0).long()
    return logits.argmax(dim=-1)


def loss_fn(module: nn.Module) -> Callable[[Tensor, Tensor], Tensor]:
    """The module's ``loss(logits, targets)`` if it has one, else cross-entropy (BCE for one logit)."""
    return getattr(module, "loss", classification_loss)


def predict_fn(module: nn.Module) -> Callable[[Tensor], Tensor]:
    """The module's ``predict(logits)`` if it has one, else arg-max (``logit > 0`` for one logit)."""
    return getattr(module, "predict", classification_predict)
