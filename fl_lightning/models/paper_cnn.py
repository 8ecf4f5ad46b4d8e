"""The paper's MNIST CNN (Table 5)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from fl_lightning.models.base import ClassifierModule


class PaperCNN(ClassifierModule):
    """conv 4@5x5 - max-pool - conv 8@5x5 - max-pool - fc 16 - fc 10, ReLU; SGD (paper: lr 0.01, momentum 0.5)."""

    def __init__(self, lr: float = 0.01, momentum: float = 0.5, weight_decay: float = 0.0,
                 in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 4, kernel_size=5), nn.MaxPool2d(2), nn.ReLU(),
            nn.Conv2d(4, 8, kernel_size=5), nn.MaxPool2d(2), nn.ReLU(),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(8 * 4 * 4, 16), nn.ReLU(),
                                        nn.Linear(16, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        """Logits for ``[B, 1, 28, 28]`` images."""
        return self.classifier(self.features(x))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Plain SGD with momentum, as in the authors' script."""
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=self.hparams.momentum,
                               weight_decay=self.hparams.weight_decay)
