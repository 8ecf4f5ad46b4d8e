"""Bring your own unlabeled data: an autoencoder on scikit-learn's digit images, without their labels.

Run it with ``python examples/autoencoder.py``. Each sample is a bare image tensor, so each batch
reaches ``training_step`` as a tensor, exactly as under a Lightning ``DataLoader``. No labels are
needed by the ``iid`` partition, the aggregator or a model-poisoning attack; a label-flip attack
on this data would be refused before the first round, naming what it lacks.
"""
from __future__ import annotations

import lightning as L
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from fl_lightning import FederatedDataModule, FederatedTrainer
from fl_lightning.aggregators import ResidualReweight
from fl_lightning.attacks import GaussianNoise


class Images(Dataset):
    """Unlabeled 8x8 images, one tensor per sample."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


class AutoEncoder(L.LightningModule):
    """64 pixels -> 8 numbers -> 64 pixels; the reconstruction error is both the loss and the test metric."""

    def __init__(self, lr: float = 0.01, code: int = 8) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, code))
        self.decoder = nn.Sequential(nn.Linear(code, 32), nn.ReLU(), nn.Linear(32, 64))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(images)).view_as(images)

    def training_step(self, batch, batch_idx):
        loss = F.mse_loss(self(batch), batch)
        self.log("reconstruction", loss)
        return loss

    def test_step(self, batch, batch_idx):
        self.log("reconstruction", F.mse_loss(self(batch), batch))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def digit_images(seed: int = 0) -> tuple[Images, Images]:
    """scikit-learn's 1,797 digit images in [0, 1], labels dropped (80% train, 20% test)."""
    images = torch.tensor(load_digits().images, dtype=torch.float32).unsqueeze(1) / 16.0
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    cut = int(0.8 * len(order))
    return Images(images[order[:cut]]), Images(images[order[cut:]])


def main(rounds: int = 10, root: str = "logs") -> dict[str, float]:
    """Federate the autoencoder over 10 clients (2 send noise); return the final test metrics."""
    train, test = digit_images()
    datamodule = FederatedDataModule.from_datasets(train, test, num_clients=10, partition="iid", seed=0)
    trainer = FederatedTrainer(rounds=rounds, local_epochs=1, batch_size=32, aggregator=ResidualReweight(),
                               attacks=[GaussianNoise(clients=2)], logger=False, default_root_dir=root,
                               enable_progress_bar=False, seed=0)
    trainer.fit(AutoEncoder(), datamodule=datamodule)
    return trainer.test()


if __name__ == "__main__":
    print(main())
