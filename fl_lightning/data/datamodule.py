"""``FederatedDataModule``: a dataset, a seeded partition into clients, and each client's tensors."""
from __future__ import annotations

from typing import Callable

import torch

from fl_lightning.data import partition as partitions
from fl_lightning.data.base import FederatedDataset, TensorData


class FederatedDataModule:
    """Loads ``dataset`` and partitions its training part over ``num_clients`` clients.

    ``partition``: one of :data:`fl_lightning.data.partition.PARTITIONS`. ``train_fraction``: each
    client trains on the first share of its own indices (the paper's script keeps 70%).
    """

    def __init__(self, dataset: FederatedDataset, num_clients: int = 10, partition: str = "iid",
                 classes_per_client: int = 2, train_fraction: float = 1.0, seed: int = 0) -> None:
        if partition not in partitions.PARTITIONS:
            raise ValueError(f"unknown partition {partition!r}; choose one of {list(partitions.PARTITIONS)}")
        if not 0.0 < train_fraction <= 1.0:
            raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction}")
        self.dataset = dataset
        self.num_clients = num_clients
        self.partition = partition
        self.classes_per_client = classes_per_client
        self.train_fraction = train_fraction
        self.seed = seed
        self.client_indices: list[torch.Tensor] = []
        self.clients: list[TensorData] = []
        self.test: TensorData | None = None
        self._prepared = False

    @property
    def num_classes(self) -> int:
        """Number of classes of the dataset."""
        return self.dataset.num_classes

    def setup(self) -> None:
        """Load the data and partition it (idempotent)."""
        if self._prepared:
            return
        train, self.test = self.dataset.load()
        self.client_indices = self._split(train)
        self.clients = [train.subset(idx[: max(1, int(len(idx) * self.train_fraction))])
                        for idx in self.client_indices]
        self._prepared = True

    def _split(self, train: TensorData) -> list[torch.Tensor]:
        split: dict[str, Callable[[], list[torch.Tensor]]] = {
            "iid": lambda: partitions.iid(train.targets, self.num_clients, self.seed),
            "classes": lambda: partitions.classes(train.targets, self.num_clients,
                                                  self.classes_per_client, self.seed),
        }
        return split[self.partition]()

    @property
    def fingerprint(self) -> str:
        """Hash of the partition's index lists (saved in checkpoints, logged with the run)."""
        self.setup()
        return partitions.fingerprint(self.client_indices)

    def hparams(self) -> dict:
        """What to record with the run."""
        return {"dataset": repr(self.dataset), "num_clients": self.num_clients, "partition": self.partition,
                "classes_per_client": self.classes_per_client, "train_fraction": self.train_fraction,
                "data_seed": self.seed}
