"""FastText for binary sentiment (paper A.2): mean word embedding -> one logit, BCE, Adam lr 0.05."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from fl_lightning.models.base import ClassifierModule


class FastText(ClassifierModule):
    """``EmbeddingBag(vocab_size, embed_dim, mean, padding_idx=0)`` -> ``Linear(embed_dim, 1)``.

    Inputs are ``[B, L]`` int64 token ids padded with 0 (as :class:`~fl_lightning.data.AmazonReviews`
    produces); padding is left out of the mean. The single logit gets BCE and a 0 threshold from
    :class:`ClassifierModule`.
    """

    def __init__(self, vocab_size: int = 25000, embed_dim: int = 100, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embedding = nn.EmbeddingBag(vocab_size, embed_dim, mode="mean", padding_idx=0)
        self.fc = nn.Linear(embed_dim, 1)

    def forward(self, tokens: Tensor) -> Tensor:
        """Logits ``[B, 1]`` for ``[B, L]`` token ids."""
        return self.fc(self.embedding(tokens))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam, as in the paper."""
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
