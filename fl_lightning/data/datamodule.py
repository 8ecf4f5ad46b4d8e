"""``FederatedDataModule``: a dataset, a seeded partition into clients, and each client's data."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from fl_lightning.checks import (check_choice, check_instance, check_int, check_number, check_optional_int,
                                 check_positive, check_seed, did_you_mean)
from fl_lightning.data import partition as partitions
from fl_lightning.data.base import ClientData, FederatedDataset
from fl_lightning.seeding import derive_seed

OWNER = "FederatedDataModule"


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

    Any map-style torch ``Dataset`` works through :meth:`from_datasets`, a ``LightningDataModule``
    through :meth:`from_lightning`. A client's data is :class:`TensorData` or, for per-sample
    transforms and data over the memory budget, :class:`~fl_lightning.data.lazy.LazyData`.

    Args:
        dataset: the dataset to load and split (a ``FederatedDataset``: MNIST5k, MNIST, CIFAR10, ...).
        num_clients: how many clients share the training part; ``None`` only with ``partition="by_key"``.
        partition: how the training part is split: ``iid``, ``classes``, ``dirichlet`` or ``by_key``.
        classes_per_client: classes each client holds with ``partition="classes"``.
        train_fraction: share of each client's own samples it trains on (the paper keeps 0.7).
        seed: seed of the partition (the command line links it to ``trainer.seed``).
        alpha: concentration of the Dirichlet draw with ``partition="dirichlet"`` (smaller: more skewed).
        samples_per_class: with ``partition="classes"``, exactly this many samples of each class per client.
    """

    def __init__(self, dataset: FederatedDataset, num_clients: int | None = 10, partition: str = "iid",
                 classes_per_client: int = 2, train_fraction: float = 1.0, seed: int = 0,
                 alpha: float = 0.9, samples_per_class: int | None = None) -> None:
        check_instance(dataset, FederatedDataset, "dataset", OWNER,
                       hint="for a torch Dataset use FederatedDataModule.from_datasets(train, test, num_clients=...), "
                            "for a LightningDataModule FederatedDataModule.from_lightning(dm, num_clients=...)")
        if isinstance(partition, str) and partition not in partitions.PARTITIONS:
            raise ValueError(f"{OWNER}: unknown partition {partition!r}{did_you_mean(partition, partitions.PARTITIONS)}; "
                             f"choose one of {list(partitions.PARTITIONS)}")
        check_choice(partition, partitions.PARTITIONS, "partition", OWNER)
        check_number(train_fraction, "train_fraction", OWNER, low=0.0, high=1.0, low_inclusive=False)
        if num_clients is None and partition != "by_key":
            raise ValueError(f"{OWNER}: num_clients=None (clients from the keys) only works with partition='by_key'; "
                             f"give a number of clients for partition={partition!r}")
        check_optional_int(num_clients, "num_clients", OWNER, minimum=1)
        check_int(classes_per_client, "classes_per_client", OWNER, minimum=1)
        check_seed(seed, OWNER)
        check_positive(alpha, "alpha", OWNER)
        check_optional_int(samples_per_class, "samples_per_class", OWNER, minimum=1)
        self.dataset = dataset
        self.num_clients = num_clients
        self._requested_clients = num_clients
        self.partition = partition
        self.classes_per_client = classes_per_client
        self.train_fraction = train_fraction
        self.seed = seed
        self.alpha = alpha
        self.samples_per_class = samples_per_class
        self.client_indices: list[Tensor] = []
        self.client_keys: list | None = None
        self.clients: list[ClientData] = []
        self.test: ClientData | None = None
        #: the server's root set when :meth:`setup` was asked for ``root_samples > 0`` (FLTrust), else ``None``
        self.root: ClientData | None = None
        self.root_samples = 0
        self._loaded: tuple[ClientData, ClientData | None] | None = None
        self._prepared = False

    @classmethod
    def from_datasets(cls, train: Any, test: Any | None = None, *, num_clients: int, partition: str = "iid",
                      classes_per_client: int = 2, train_fraction: float = 1.0, alpha: float = 0.9,
                      samples_per_class: int | None = None, seed: int = 0, num_classes: int | None = None,
                      class_names: Sequence[str] | None = None, materialize: bool | None = None,
                      memory_budget_mb: float = 2048.0, num_workers: int = 0, input_key: str | None = None,
                      target_key: str | None = None) -> "FederatedDataModule":
        """Partition any map-style dataset (torchvision, ``TensorDataset``, your own, Hugging Face in torch format).

        Samples are ``(input, label, ...)`` or mappings (``input_key``/``target_key`` name the
        fields; ``image``/``label`` and similar are found alone). Small data with fixed samples is
        read once into tensors; data with a random ``transform``, data over ``memory_budget_mb``,
        or ``materialize=False`` stays lazy (:class:`~fl_lightning.data.lazy.LazyData`, read with
        ``num_workers`` loader workers). ``num_classes``/``class_names`` default to the dataset's
        ``classes`` or to the largest label + 1. The other arguments are those of the constructor.
        """
        from fl_lightning.data.torch_datasets import TorchDatasets

        source = TorchDatasets(train, test, num_classes=num_classes, class_names=class_names, materialize=materialize,
                               memory_budget_mb=memory_budget_mb, num_workers=num_workers, input_key=input_key,
                               target_key=target_key)
        return cls(source, num_clients=num_clients, partition=partition, classes_per_client=classes_per_client,
                   train_fraction=train_fraction, seed=seed, alpha=alpha, samples_per_class=samples_per_class)

    @classmethod
    def from_lightning(cls, datamodule: Any, *, num_clients: int, partition: str = "iid",
                       **kwargs: Any) -> "FederatedDataModule":
        """Partition a ``LightningDataModule``'s training set, after its ``prepare_data()`` and ``setup()``.

        Runs ``prepare_data()``, ``setup("fit")`` and ``setup("test")``; the training set is
        ``train_dataloader().dataset`` (or a ``train_dataset``-like attribute), the test set
        ``test_dataloader().dataset`` when defined. ``num_classes`` defaults to the data module's
        own ``num_classes`` attribute; every other argument is that of :meth:`from_datasets`.
        """
        from fl_lightning.data.lightning_source import lightning_datasets

        train, test = lightning_datasets(datamodule)
        declared = getattr(datamodule, "num_classes", None)
        if kwargs.get("num_classes") is None and isinstance(declared, int) and not isinstance(declared, bool):
            kwargs["num_classes"] = declared
        return cls.from_datasets(train, test, num_clients=num_clients, partition=partition, **kwargs)

    @property
    def num_classes(self) -> int:
        """Number of classes of the dataset (for :meth:`from_datasets`, known once the data is loaded)."""
        if not self.dataset.num_classes:
            self._load()
        return self.dataset.num_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input, e.g. ``(1, 28, 28)`` (loads the data if needed)."""
        return tuple(self._load()[0].input_shape)

    def _load(self) -> tuple[ClientData, ClientData | None]:
        """The dataset's ``(train, test)``, loaded once."""
        if self._loaded is None:
            self._loaded = self.dataset.load()
        return self._loaded

    def setup(self, root_samples: int = 0) -> None:
        """Load the data and partition it (idempotent for the same ``root_samples``).

        ``root_samples > 0`` first holds out that many training samples, drawn with the seed, as
        the server's root set :attr:`root` (FLTrust's reference data); the clients are then
        partitioned from the rest. With 0 the partition is the one of earlier versions, fingerprint
        included.
        """
        check_int(root_samples, "root_samples", OWNER, minimum=0)
        if self._prepared and root_samples == self.root_samples:
            return
        train, self.test = self._load()
        if root_samples >= len(train):
            raise ValueError(f"{OWNER}: root_samples={root_samples} leaves none of the {len(train)} training samples "
                             f"for the clients; hold out fewer than {len(train)}")
        pool = None
        self.root = None
        if root_samples:
            drawn = torch.randperm(len(train), generator=torch.Generator().manual_seed(derive_seed(self.seed, "root")))
            self.root = train.subset(drawn[:root_samples].sort().values)
            pool = drawn[root_samples:].sort().values
        self.num_clients, self.client_keys = self._requested_clients, None
        targets = train.targets if pool is None else train.targets[pool]
        parts = self._split(targets, pool)
        self.client_indices = parts if pool is None else [pool[part] for part in parts]
        self.num_clients = len(self.client_indices)
        self.clients = [train.subset(idx[: max(1, int(len(idx) * self.train_fraction))])
                        for idx in self.client_indices]
        self.root_samples = root_samples
        self._prepared = True

    def _ensure_setup(self) -> None:
        """Set up with the default when nothing has been set up yet (keeps a root set already held out)."""
        if not self._prepared:
            self.setup()

    def _split(self, targets: Tensor, pool: Tensor | None) -> list[Tensor]:
        """Client index lists into ``targets`` (the training set, or its part ``pool`` left after the root set)."""
        split: dict[str, Callable[[], list[Tensor]]] = {
            "iid": lambda: partitions.iid(targets, self.num_clients, self.seed),
            "classes": lambda: partitions.classes(targets, self.num_clients, self.classes_per_client,
                                                  self.seed, samples_per_class=self.samples_per_class),
            "dirichlet": lambda: partitions.dirichlet(targets, self.num_clients, self.alpha, self.seed),
            "by_key": lambda: self._split_by_key(pool),
        }
        return split[self.partition]()

    def _split_by_key(self, pool: Tensor | None) -> list[Tensor]:
        keys = self.dataset.partition_keys()
        num_train = len(self._load()[0])
        if keys is None:
            raise ValueError(f"partition='by_key' needs per-sample keys, but {self.dataset!r} has none "
                             "(its partition_keys() returns None); use 'iid', 'classes' or 'dirichlet'")
        if len(keys) != num_train:
            raise ValueError(f"{self.dataset!r}.partition_keys() returned {len(keys)} keys for "
                             f"{num_train} training samples; it must return one key per training sample")
        if pool is not None:
            keys = [keys[i] for i in pool.tolist()]
        order = partitions.key_order(keys)
        if self.num_clients is not None and self.num_clients != len(order):
            raise ValueError(f"partition='by_key' makes one client per key: {len(order)} clients, but "
                             f"num_clients={self.num_clients}; pass num_clients=None (or {len(order)})")
        self.client_keys = order
        return partitions.by_key(keys, self.seed)

    def client_class_histogram(self) -> Tensor:
        """``[num_clients, num_classes]`` int64 counts of each class in each client's training data."""
        self._ensure_setup()
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
        self._ensure_setup()
        return partitions.fingerprint(self.client_indices)

    def hparams(self) -> dict:
        """What to record with the run."""
        return {"dataset": repr(self.dataset), "num_clients": self.num_clients, "partition": self.partition,
                "classes_per_client": self.classes_per_client, "train_fraction": self.train_fraction,
                "alpha": self.alpha, "samples_per_class": self.samples_per_class, "data_seed": self.seed,
                "root_samples": self.root_samples}
