"""What the round loop needs from a model beyond a plain ``LightningModule``."""
from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor


class ClassifierModule(L.LightningModule):
    """A ``LightningModule`` whose ``forward`` returns logits; evaluation uses :meth:`loss` and :meth:`predict`.

    Subclasses define ``forward`` and ``configure_optimizers``. Binary models with one output
    logit get BCE and a 0 threshold automatically; override :meth:`loss` / :meth:`predict` for
    anything else. User modules need not derive from this: the trainer falls back to the same rules.
    """

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """The training and test loss."""
        return classification_loss(logits, targets)

    def predict(self, logits: Tensor) -> Tensor:
        """Predicted class per sample."""
        return classification_predict(logits)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """One local SGD step's loss."""
        inputs, targets = batch
        loss = self.loss(self(inputs), targets)
        self.log("train/loss", loss)
        return loss

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """Loss on a test batch."""
        inputs, targets = batch
        return self.loss(self(inputs), targets)


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


def count_parameters(module: torch.nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
