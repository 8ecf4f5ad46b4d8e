"""A learning-rate schedule over the whole federated run, written as for one Lightning fit.

``configure_optimizers`` sizes a ``OneCycleLR`` with ``self.trainer.estimated_stepping_batches``,
which ``FederatedTrainer`` answers with the run's total (rounds x local epochs x a client's batches).
The schedule's state lives with the global model: every round's clients continue it where the
previous round ended, and the lr each round starts with is logged as ``lr-SGD``.
``scheduler_scope="round"`` restarts it for every client and round instead.

Run it with ``python examples/scheduler_over_the_run.py``: it prints the lr of each round and the
final test metrics of both scopes.
"""
from __future__ import annotations

import lightning as L
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import TensorDataset

from fl_lightning import FederatedDataModule, FederatedTrainer


class OneCycleMLP(L.LightningModule):
    """A plain LightningModule whose schedule spans the fit, as in Lightning's documentation."""

    def __init__(self, max_lr: float = 0.5) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("loss", loss, prog_bar=True)
        return loss

    def test_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("test/loss", nn.functional.cross_entropy(logits, y))
        self.log("test/acc", (logits.argmax(dim=1) == y).float().mean())

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.max_lr, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=self.hparams.max_lr, total_steps=self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def digits_datasets(seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """scikit-learn's 1,797 8x8 digits as two torch datasets (80% train, 20% test)."""
    digits = load_digits()
    inputs = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    targets = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(seed))
    cut = int(0.8 * len(order))
    return (TensorDataset(inputs[order[:cut]], targets[order[:cut]]),
            TensorDataset(inputs[order[cut:]], targets[order[cut:]]))


def main(rounds: int = 8, scheduler_scope: str = "run", root: str = "logs") -> tuple[dict[str, float], list[float]]:
    """Federate over 10 clients; returns the final test metrics and the lr each round started with."""
    train, test = digits_datasets()
    datamodule = FederatedDataModule.from_datasets(train, test, num_clients=10, partition="iid", seed=0)
    trainer = FederatedTrainer(rounds=rounds, local_epochs=1, batch_size=32, scheduler_scope=scheduler_scope,
                               gradient_clip_val=1.0, logger=False, enable_progress_bar=False,
                               default_root_dir=root, seed=0)
    torch.manual_seed(0)
    trainer.fit(OneCycleMLP(), datamodule=datamodule)
    return trainer.test(), [record.metrics["lr-SGD"] for record in trainer.history]


if __name__ == "__main__":
    for scope in ("run", "round"):
        results, lrs = main(scheduler_scope=scope, root=f"logs/one_cycle_{scope}")
        print(f"scheduler_scope={scope!r}: lr per round {[round(lr, 4) for lr in lrs]}, test {results}")
