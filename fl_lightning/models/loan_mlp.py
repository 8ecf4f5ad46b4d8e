"""The paper's LOAN classifier: three fully connected layers 91 -> 46 -> 23 -> 9 with ReLU."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from fl_lightning.models.base import ClassifierModule


class LoanMLP(ClassifierModule):
    """MLP ``in_features -> 46 -> 23 -> num_classes``; SGD lr 0.01 (paper A.6: benign clients) and momentum 0.5.

    The momentum is the authors' script's local optimiser setting (ALGORITHM.md section 5); the
    paper's LOAN attacker uses lr 0.002, i.e. 1/5 of this.
    """

    def __init__(self, in_features: int = 91, num_classes: int = 9, lr: float = 0.01, momentum: float = 0.5,
                 weight_decay: float = 0.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(in_features, 46), nn.ReLU(), nn.Linear(46, 23), nn.ReLU(),
                                 nn.Linear(23, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, num_classes]`` for ``[B, in_features]`` standardised features."""
        return self.net(x)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """SGD with momentum."""
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=self.hparams.momentum,
                               weight_decay=self.hparams.weight_decay)
