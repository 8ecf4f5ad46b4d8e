"""Bring your own regression: scikit-learn's diabetes data, float targets, a test_step that logs its own metric.

Run it with ``python examples/regression.py``. Float targets need no ``num_classes``; the run
reports what ``test_step`` logs (``test/mse``, ``test/mae``) and no accuracy. Two clients send
sign-flipped updates, which need no labels.
"""
from __future__ import annotations

import lightning as L
import torch
from sklearn.datasets import load_diabetes
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from fl_lightning import FederatedDataModule, FederatedTrainer
from fl_lightning.aggregators import ResidualReweight
from fl_lightning.attacks import SignFlip


class DiabetesRegressor(L.LightningModule):
    """A plain regression module: mean squared error, and the metrics it wants reported."""

    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self(x), y)
        self.log("mse", loss)
        return loss

    def test_step(self, batch, batch_idx):
        x, y = batch
        prediction = self(x)
        self.log("mse", F.mse_loss(prediction, y))
        self.log("mae", (prediction - y).abs().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)


def diabetes_datasets(seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """442 patients, 10 standardised features, the disease progression standardised (80% train, 20% test)."""
    data = load_diabetes()
    inputs = torch.tensor(data.data, dtype=torch.float32)
    targets = torch.tensor(data.target, dtype=torch.float32)
    inputs = (inputs - inputs.mean(0)) / inputs.std(0)
    targets = (targets - targets.mean()) / targets.std()
    order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(seed))
    cut = int(0.8 * len(order))
    train, test = order[:cut], order[cut:]
    return TensorDataset(inputs[train], targets[train]), TensorDataset(inputs[test], targets[test])


def main(rounds: int = 20, root: str = "logs") -> dict[str, float]:
    """Federate the regressor over 10 clients (2 flip the sign of their update); return the final test metrics."""
    train, test = diabetes_datasets()
    datamodule = FederatedDataModule.from_datasets(train, test, num_clients=10, partition="size_skew", alpha=2.0,
                                                   seed=0)
    trainer = FederatedTrainer(rounds=rounds, local_epochs=2, batch_size=16, aggregator=ResidualReweight(),
                               attacks=[SignFlip(scale=4.0, clients=2)], logger=False, default_root_dir=root,
                               enable_progress_bar=False, seed=0)
    trainer.fit(DiabetesRegressor(), datamodule=datamodule)
    return trainer.test()


if __name__ == "__main__":
    print(main())
