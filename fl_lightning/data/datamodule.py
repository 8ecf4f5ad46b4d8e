"""``FederatedDataModule``: a dataset, a seeded partition into clients, and each client's tensors."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from fl_lightning.data import partition as partitions
from fl_lightning.data.base import FederatedDataset, TensorData


class FederatedDataModule:
    """Loads ``dataset`` and partitions its training part over ``num_clients`` clients.

    ``partition``: one of :data:`fl_lightning.data.partition.PARTITIONS`:

    - ``"iid"``: shuffled, near-equal parts;
    - ``"classes"``: ``classes_per_client`` classes per client, optionally exactly
      ``samples_per_class`` samples of each (paper Table 4: 300);
    - ``"dirichlet"``: per-class proportions drawn from Dir(``alpha``) (paper CIFAR-10: 0.9);
    - ``"by_key"``: one client per distinct ``dataset.partition_keys()`` value (LOAN: US state).
      The number of clients then comes from the keys: leave ``num_clients=None`` (or give exactly
      that number); :meth:`setup` sets ``num_clients`` and ``client_keys``.

    ``train_fraction``: each client trains on the first share of its own indices (the paper's
    script keeps 70%).
    """

    def __init__(self, dataset: FederatedDataset, num_clients: int | None = 10, partition: str = "iid",
                 classes_per_client: int = 2, train_fraction: float = 1.0, seed: int = 0,
                 alpha: float = 0.9, samples_per_class: int | None = None) -> None:
        if partition not in partitions.PARTITIONS:
            raise ValueError(f"unknown partition {partition!r}; choose one of {list(partitions.PARTITIONS)}")
        if not 0.0 < train_fraction <= 1.0:
            raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction}")
        if num_clients is None and partition != "by_key":
            raise ValueError(f"num_clients=None (clients from the keys) only works with partition='by_key'; "
                             f"give a number of clients for partition={partition!r}")
        if num_clients is not None and num_clients < 1:
            raise ValueError(f"num_clients must be >= 1, got {num_clients}")
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0 (Dirichlet concentration), got {alpha}")
        if samples_per_class is not None and samples_per_class < 1:
            raise ValueError(f"samples_per_class must be >= 1 or None, got {samples_per_class}")
        self.dataset = dataset
        self.num_clients = num_clients
        self.partition = partition
        self.classes_per_client = classes_per_client
        self.train_fraction = train_fraction
        self.seed = seed
        self.alpha = alpha
        self.samples_per_class = samples_per_class
        self.client_indices: list[Tensor] = []
        self.client_keys: list | None = None
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
        self.num_clients = len(self.client_indices)
        self.clients = [train.subset(idx[: max(1, int(len(idx) * self.train_fraction))])
                        for idx in self.client_indices]
        self._prepared = True

    def _split(self, train: TensorData) -> list[Tensor]:
        split: dict[str, Callable[[], list[Tensor]]] = {
            "iid": lambda: partitions.iid(train.targets, self.num_clients, self.seed),
            "classes": lambda: partitions.classes(train.targets, self.num_clients, self.classes_per_client,
                                                  self.seed, samples_per_class=self.samples_per_class),
            "dirichlet": lambda: partitions.dirichlet(train.targets, self.num_clients, self.alpha, self.seed),
            "by_key": lambda: self._split_by_key(len(train)),
        }
        return split[self.partition]()

    def _split_by_key(self, num_train: int) -> list[Tensor]:
        keys = self.dataset.partition_keys()
        if keys is None:
            raise ValueError(f"partition='by_key' needs per-sample keys, but {self.dataset!r} has none "
                             "(its partition_keys() returns None); use 'iid', 'classes' or 'dirichlet'")
        if len(keys) != num_train:
            raise ValueError(f"{self.dataset!r}.partition_keys() returned {len(keys)} keys for "
                             f"{num_train} training samples; it must return one key per training sample")
        order = partitions.key_order(keys)
        if self.num_clients is not None and self.num_clients != len(order):
            raise ValueError(f"partition='by_key' makes one client per key: {len(order)} clients, but "
                             f"num_clients={self.num_clients}; pass num_clients=None (or {len(order)})")
        self.client_keys = order
        return partitions.by_key(keys, self.seed)

    def client_class_histogram(self) -> Tensor:
        """``[num_clients, num_classes]`` int64 counts of each class in each client's training tensors."""
        self.setup()
        num_classes = self.num_classes
        rows = []
        for client_id, client in enumerate(self.clients):
            labels = client.targets.reshape(-1).long()
            if len(labels) and not (0 <= int(labels.min()) and int(labels.max()) < num_classes):
                raise ValueError(f"client {client_id} has labels outside 0..{num_classes - 1} "
                                 f"(dataset num_classes={num_classes}); fix the dataset's num_classes")
            rows.append(torch.bincount(labels, minlength=num_classes))
        return torch.stack(rows)

    @property
    def fingerprint(self) -> str:
        """Hash of the partition's index lists (saved in checkpoints, logged with the run)."""
        self.setup()
        return partitions.fingerprint(self.client_indices)

    def hparams(self) -> dict:
        """What to record with the run."""
        return {"dataset": repr(self.dataset), "num_clients": self.num_clients, "partition": self.partition,
                "classes_per_client": self.classes_per_client, "train_fraction": self.train_fraction,
                "alpha": self.alpha, "samples_per_class": self.samples_per_class, "data_seed": self.seed}
