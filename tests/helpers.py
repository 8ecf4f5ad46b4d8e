"""Tiny data, models and aggregators for fast round-loop tests (imported as ``tests.helpers``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fl_lightning import AggregationResult, Aggregator, FederatedDataModule, FederatedTrainer, RoundContext
from fl_lightning.data.base import FederatedDataset, TensorData
from fl_lightning.models.base import ClassifierModule


class Blobs(FederatedDataset):
    """``num_classes`` noisy 1x8x8 prototypes: learnable in a few SGD steps, a few hundred samples."""

    def __init__(self, num_train: int = 240, num_test: int = 80, num_classes: int = 4, noise: float = 0.8,
                 seed: int = 0) -> None:
        self.num_train, self.num_test, self.num_classes = num_train, num_test, num_classes
        self.noise, self.seed = noise, seed

    def load(self) -> tuple[TensorData, TensorData]:
        g = torch.Generator().manual_seed(self.seed)
        prototypes = torch.randn(self.num_classes, 1, 8, 8, generator=g)

        def draw(n: int) -> TensorData:
            y = torch.arange(n) % self.num_classes
            y = y[torch.randperm(n, generator=g)]
            x = prototypes[y] + self.noise * torch.randn(n, 1, 8, 8, generator=g)
            return TensorData(x, y)

        return draw(self.num_train), draw(self.num_test)

    def __repr__(self) -> str:
        return f"Blobs(num_train={self.num_train}, num_classes={self.num_classes}, seed={self.seed})"


class TinyNet(ClassifierModule):
    """64 -> hidden -> classes MLP; optional dropout (global RNG) and BatchNorm (float and int buffers)."""

    def __init__(self, hidden: int = 8, num_classes: int = 4, lr: float = 0.1, momentum: float = 0.5,
                 dropout: float = 0.0, batchnorm: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()
        layers: list[nn.Module] = [nn.Flatten(), nn.Linear(64, hidden)]
        if batchnorm:
            layers.append(nn.BatchNorm1d(hidden))
        layers.append(nn.ReLU())
        if dropout:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(hidden, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=self.hparams.momentum)


class MeanAggregator(Aggregator):
    """Sample-count weighted mean with a settable ``min_clients``: a minimal user-written aggregator."""

    def __init__(self, min_clients: int = 1) -> None:
        self.min_clients = min_clients

    def aggregate(self, updates: Tensor, ctx: RoundContext) -> AggregationResult:
        weights = ctx.num_samples / ctx.num_samples.sum()
        return AggregationResult(weights @ updates, weights, {"flagged": torch.zeros(len(weights), dtype=torch.bool)})


def fedavg(**kwargs: Any) -> Aggregator:
    """The library's FedAvg (the trainer's default)."""
    from fl_lightning.aggregators import FedAvg

    return FedAvg(**kwargs)


def make_dm(num_clients: int = 4, partition: str = "iid", seed: int = 0, **kwargs: Any) -> FederatedDataModule:
    """A data module over :class:`Blobs` (``dataset=`` overrides it)."""
    dataset = kwargs.pop("dataset", None) or Blobs()
    return FederatedDataModule(dataset, num_clients=num_clients, partition=partition, seed=seed, **kwargs)


def make_trainer(root: str | Path, **kwargs: Any) -> FederatedTrainer:
    """A quiet, small trainer: 2 rounds, 1 epoch, batches of 16, no logger unless given.

    It seeds the global generators (``seed_everything=True``, opt-in in the library): the tests build
    their module after the trainer and compare runs, so the module's initial weights follow the seed.
    """
    settings: dict[str, Any] = dict(rounds=2, local_epochs=1, batch_size=16, logger=False,
                                    enable_progress_bar=False, default_root_dir=str(root), seed=0,
                                    seed_everything=True)
    settings.update(kwargs)
    if "aggregator" not in settings:
        settings["aggregator"] = fedavg()
    return FederatedTrainer(**settings)


def metrics_without_time(history: list) -> list[dict[str, float]]:
    """Each round's metrics minus the wall-clock ones (which differ between identical runs)."""
    return [{k: v for k, v in r.metrics.items() if not k.endswith("/seconds")} for r in history]


def flat_params(module: nn.Module) -> Tensor:
    """Every floating-point parameter of ``module`` in one vector (the trainer's layout order)."""
    return torch.cat([p.detach().reshape(-1) for p in module.parameters() if p.is_floating_point()])


def resume_scenario(root: str | Path, callbacks: tuple = ()) -> tuple[FederatedTrainer, ClassifierModule,
                                                                       FederatedDataModule]:
    """The run the kill-and-resume tests interrupt: sampling, an attack, dropout, BatchNorm, FoolsGold's memory."""
    from fl_lightning.aggregators import FoolsGold
    from fl_lightning.attacks import LabelFlip

    trainer = make_trainer(root, rounds=4, seed=11, clients_per_round=3, max_batches_per_epoch=3, logger=None,
                           seed_everything=True,  # the module below is built after it: same init every time
                           aggregator=FoolsGold(), callbacks=list(callbacks),
                           attacks=[LabelFlip(source=1, target=2, clients=1, extra_epochs=1, lr=0.2)])
    module = TinyNet(dropout=0.2, batchnorm=True)
    return trainer, module, make_dm(num_clients=5)
