"""What the round loop needs from a model beyond a plain ``LightningModule``."""
from __future__ import annotations

import lightning as L
import torch
from torch import Tensor

from fl_lightning.module_contract import classification_loss, classification_predict


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


def count_parameters(module: torch.nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
