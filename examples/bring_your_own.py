"""Bring your own LightningModule and data: scikit-learn's digits, an MLP, a scheduler, a CSV logger.

Run it with ``python examples/bring_your_own.py``; it prints the final test metrics and writes
``logs/digits/.../metrics.csv``. Nothing in it is specific to fl_lightning except the last lines.
"""
from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import TensorDataset

from fl_lightning import FederatedDataModule, FederatedTrainer
from fl_lightning.aggregators import ResidualReweight
from fl_lightning.attacks import LabelFlip


class DigitsMLP(L.LightningModule):
    """A plain LightningModule: what you already have."""

    def __init__(self, lr: float = 0.1, hidden: int = 64) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = nn.functional.cross_entropy(logits, y)
        self.log("loss", loss)
        self.log("acc", (logits.argmax(dim=1) == y).float().mean())
        return loss

    def test_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("test/loss", nn.functional.cross_entropy(logits, y))
        self.log("test/acc", (logits.argmax(dim=1) == y).float().mean())

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.5)
        # the schedule spans the federated run, as a Lightning fit: here every 4 local epochs (2 rounds)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.7)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


def digits_datasets(seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """scikit-learn's 1,797 8x8 digits as two torch datasets (80% train, 20% test)."""
    digits = load_digits()
    inputs = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    targets = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(seed))
    cut = int(0.8 * len(order))
    train, test = order[:cut], order[cut:]
    return TensorDataset(inputs[train], targets[train]), TensorDataset(inputs[test], targets[test])


def main(rounds: int = 10, root: str = "logs") -> dict[str, float]:
    """Federate the module over 20 clients, 4 of them flipping 1 -> 7, and return the final test metrics."""
    train, test = digits_datasets()
    datamodule = FederatedDataModule.from_datasets(train, test, num_clients=20, partition="iid", seed=0)
    trainer = FederatedTrainer(
        rounds=rounds, local_epochs=2, batch_size=32,
        aggregator=ResidualReweight(),
        attacks=[LabelFlip(source=1, target=7, clients=4)],
        logger=CSVLogger(root, name="digits"),
        seed=0, seed_everything=True,  # opt-in, as in Lightning: the module below gets the seed's weights
    )
    module = DigitsMLP()
    trainer.fit(module, datamodule=datamodule)
    return trainer.test()


if __name__ == "__main__":
    print(main())
