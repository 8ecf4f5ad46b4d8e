"""``FederatedDataModule``: a dataset, a seeded partition into clients, and each client's data."""
from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from fl_lightning.checks import (check_instance, check_int, check_number, check_optional_int,
                                 check_positive, check_seed, did_you_mean)
from fl_lightning.data import partition as partitions
from fl_lightning.data.base import ClientData, FederatedDataset
from fl_lightning.labels import has_class_labels, require_labels
from fl_lightning.seeding import derive_seed

OWNER = "FederatedDataModule"
#: a partition as a recipe may write it: a name of :data:`~fl_lightning.data.partition.PARTITIONS`, or
#: one list of training-set indices per client. It holds no ``Callable``, so a recipe can never name a
#: function (``partition: os.system`` stays a string and is refused); Python callers may still pass a key
#: function ``key(index) -> hashable``, accepted at run time, not through the type.
Partition = Union[str, list[list[int]]]


class FederatedDataModule:
    """Loads ``dataset`` and partitions its training part over ``num_clients`` clients.

    ``partition``: one of :data:`fl_lightning.data.partition.PARTITIONS`:

    - ``"iid"``: shuffled, near-equal parts;
    - ``"size_skew"``: shuffled parts whose sizes follow Dir(``alpha``) (quantity skew);
    - ``"classes"``: ``classes_per_client`` classes per client, optionally exactly
      ``samples_per_class`` samples of each (paper Table 4: 300);
    - ``"dirichlet"``: per-class proportions drawn from Dir(``alpha``) (paper CIFAR-10: 0.9);
    - ``"by_key"``: one client per distinct ``dataset.partition_keys()`` value (LOAN: US state).
      The number of clients then comes from the keys: leave ``num_clients=None`` (or give exactly
      that number); :meth:`setup` sets ``num_clients`` and ``client_keys``.
    - a list of index lists, one per client (indices into the training set), taken as given;
    - a Python function ``key(index) -> hashable`` of a training-set index: one client per distinct
      key, as ``"by_key"`` (e.g. ``lambda i: train[i]["speaker"]``).

    ``"iid"``, ``"size_skew"``, index lists and key functions need no labels; ``"classes"`` and
    ``"dirichlet"`` need integer class labels and refuse unlabeled data and regression targets.
    A partition that leaves training samples with no client says how many, and why, in a warning.

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

    def __init__(self, dataset: FederatedDataset, num_clients: int | None = 10, partition: Partition = "iid",
                 classes_per_client: int = 2, train_fraction: float = 1.0, seed: int = 0,
                 alpha: float = 0.9, samples_per_class: int | None = None) -> None:
        check_instance(dataset, FederatedDataset, "dataset", OWNER,
                       hint="for a torch Dataset use FederatedDataModule.from_datasets(train, test, num_clients=...), "
                            "for a LightningDataModule FederatedDataModule.from_lightning(dm, num_clients=...)")
        partition = _check_partition(partition, num_clients)
        check_number(train_fraction, "train_fraction", OWNER, low=0.0, high=1.0, low_inclusive=False)
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
        #: the validation split the module's ``validation_step`` runs on (``None``: it runs on :attr:`test`)
        self.val: ClientData | None = None
        #: the server's root set when :meth:`setup` was asked for ``root_samples > 0`` (FLTrust), else ``None``
        self.root: ClientData | None = None
        self.root_samples = 0
        self._loaded: tuple[ClientData, ClientData | None] | None = None
        self._val_loaded: ClientData | None | bool = False
        self._prepared = False

    @classmethod
    def from_datasets(cls, train: Any, test: Any | None = None, *, num_clients: int | None,
                      partition: Partition = "iid", val: Any | None = None,
                      classes_per_client: int = 2, train_fraction: float = 1.0, alpha: float = 0.9,
                      samples_per_class: int | None = None, seed: int = 0, num_classes: int | None = None,
                      class_names: Sequence[str] | None = None, materialize: bool | None = None,
                      memory_budget_mb: float = 2048.0, num_workers: int = 0, input_key: str | None = None,
                      target_key: str | None = None) -> "FederatedDataModule":
        """Partition any map-style dataset (torchvision, ``TensorDataset``, your own, Hugging Face in torch format).

        A sample is anything the module's ``training_step`` understands: ``(input, scalar label)``
        pairs take the fast path of tensors; any other sample (a tensor, a dict, ``(tokens,
        next_tokens)``) reaches ``training_step`` collated as a ``DataLoader`` collates it, with its
        scalar label (position 1, or a ``label``-like key; ``target_key`` names it) kept for the
        features that need one. ``input_key`` turns mapping samples into ``(sample[input_key],
        label)`` pairs instead. Small data with fixed samples is read once into memory; data
        with a random ``transform``, data over ``memory_budget_mb``, or ``materialize=False``
        stays lazy (:class:`~fl_lightning.data.lazy.LazyData`, read with ``num_workers`` loader
        workers; samples of another structure are read in-process). ``num_classes``/``class_names`` default to the dataset's
        ``classes`` or to the largest label + 1 (0 for unlabeled data and float, regression, targets).
        ``val``: a validation dataset for the module's ``validation_step`` (without one it runs on
        ``test``). The other arguments are those of the constructor.
        """
        from fl_lightning.data.torch_datasets import TorchDatasets

        source = TorchDatasets(train, test, val=val, num_classes=num_classes, class_names=class_names,
                               materialize=materialize, memory_budget_mb=memory_budget_mb, num_workers=num_workers,
                               input_key=input_key, target_key=target_key)
        return cls(source, num_clients=num_clients, partition=partition, classes_per_client=classes_per_client,
                   train_fraction=train_fraction, seed=seed, alpha=alpha, samples_per_class=samples_per_class)

    @classmethod
    def from_lightning(cls, datamodule: Any, *, num_clients: int | None, partition: Partition = "iid",
                       **kwargs: Any) -> "FederatedDataModule":
        """Partition a ``LightningDataModule``'s training set, after its ``prepare_data()`` and ``setup()``.

        Runs ``prepare_data()``, ``setup("fit")`` and ``setup("test")``; the training set is
        ``train_dataloader().dataset`` (or a ``train_dataset``-like attribute), the test set
        ``test_dataloader().dataset`` when defined, the validation set ``val_dataloader().dataset``
        (for the module's ``validation_step``). ``num_classes`` defaults to the data module's
        own ``num_classes`` attribute; every other argument is that of :meth:`from_datasets`.
        """
        from fl_lightning.data.lightning_source import lightning_datasets, validation_dataset

        train, test = lightning_datasets(datamodule)
        if kwargs.get("val") is None:
            kwargs["val"] = validation_dataset(datamodule)
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
    def has_class_labels(self) -> bool:
        """Whether the training samples carry integer class labels (loads the data if needed)."""
        return has_class_labels(self._load()[0].targets)

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
        if self._val_loaded is False:
            self._val_loaded = self.dataset.load_val()
        self.val = self._val_loaded
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
        targets = train.targets if pool is None or train.targets is None else train.targets[pool]
        if not isinstance(self.partition, str) and not callable(self.partition) and root_samples:
            raise ValueError(f"{OWNER}: a partition given as index lists names training-set samples, so it cannot "
                             f"hold out root_samples={root_samples} for the server; use a key function instead")
        count = len(train) if pool is None else len(pool)
        parts = self._split(targets, count, pool)
        self.client_indices = parts if pool is None else [pool[part] for part in parts]
        unused = partitions.unused_samples(parts, count)
        if unused and not isinstance(self.partition, str):  # named partitions say so themselves
            warnings.warn(f"{OWNER}: the given partition leaves {unused} of {count} training samples with no "
                          "client", stacklevel=2)
        self.num_clients = len(self.client_indices)
        self.clients = [train.subset(idx[: max(1, int(len(idx) * self.train_fraction))])
                        for idx in self.client_indices]
        self.root_samples = root_samples
        self._prepared = True

    def _ensure_setup(self) -> None:
        """Set up with the default when nothing has been set up yet (keeps a root set already held out)."""
        if not self._prepared:
            self.setup()

    def _split(self, targets: Tensor | None, count: int, pool: Tensor | None) -> list[Tensor]:
        """Client index lists into the ``count`` training samples (or those of ``pool``, left after the root set)."""
        if callable(self.partition):
            keys = [self.partition(int(i)) for i in (range(count) if pool is None else pool.tolist())]
            return self._clients_of_keys(keys)
        if not isinstance(self.partition, str):
            parts = partitions.given(self.partition, count)
            self._check_client_count(len(parts), "the index lists give")
            return parts
        if self.partition in partitions.LABEL_PARTITIONS:
            targets = require_labels(targets, f"partition={self.partition!r}")
        split: dict[str, Callable[[], list[Tensor]]] = {
            "iid": lambda: partitions.iid(count, self.num_clients, self.seed),
            "size_skew": lambda: partitions.size_skew(count, self.num_clients, self.alpha, self.seed),
            "classes": lambda: partitions.classes(targets, self.num_clients, self.classes_per_client,
                                                  self.seed, samples_per_class=self.samples_per_class),
            "dirichlet": lambda: partitions.dirichlet(targets, self.num_clients, self.alpha, self.seed),
            "by_key": lambda: self._split_by_key(pool),
        }
        return split[self.partition]()

    def _check_client_count(self, found: int, source: str) -> None:
        if self.num_clients is not None and self.num_clients != found:
            raise ValueError(f"{OWNER}: {source} {found} clients, but num_clients={self.num_clients}; "
                             f"pass num_clients=None (or {found})")

    def _clients_of_keys(self, keys: list) -> list[Tensor]:
        """One client per distinct key, in :func:`~fl_lightning.data.partition.key_order`."""
        if not keys:
            raise ValueError(f"{OWNER}: the partition key function has no training samples to read")
        order = partitions.key_order(keys)
        self._check_client_count(len(order), "the partition key function gives")
        self.client_keys = order
        return partitions.by_key(keys, self.seed)

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
            labels = require_labels(client.targets, "client_class_histogram").reshape(-1).long()
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
        partition = self.partition if isinstance(self.partition, str) else (
            "key_function" if callable(self.partition) else "index_lists")
        return {"dataset": repr(self.dataset), "num_clients": self.num_clients, "partition": partition,
                "classes_per_client": self.classes_per_client, "train_fraction": self.train_fraction,
                "alpha": self.alpha, "samples_per_class": self.samples_per_class, "data_seed": self.seed,
                "root_samples": self.root_samples}


def _check_partition(partition: Any, num_clients: int | None) -> Partition:
    """``partition`` if it is a known name, a list of index lists or a callable; else an error naming the choices."""
    if isinstance(partition, str):
        if partition not in partitions.PARTITIONS:
            raise ValueError(f"{OWNER}: unknown partition {partition!r}"
                             f"{did_you_mean(partition, partitions.PARTITIONS)}; choose one of "
                             f"{list(partitions.PARTITIONS)}, a list of index lists or a key function")
        if num_clients is None and partition != "by_key":
            raise ValueError(f"{OWNER}: num_clients=None (clients from the keys) only works with partition='by_key', "
                             f"index lists or a key function; give a number of clients for partition={partition!r}")
        return partition
    if callable(partition):
        return partition
    if isinstance(partition, Sequence) and not isinstance(partition, bytes) and len(partition) > 0 and all(
            isinstance(part, (Sequence, Tensor, np.ndarray)) and not isinstance(part, str) for part in partition):
        for part in partition:
            for index in part:  # ints, NumPy ints and integer tensor elements; never bools or floats
                if isinstance(index, bool) or not hasattr(index, "__index__"):
                    raise TypeError(f"{OWNER}: a partition's index lists hold sample indices (ints), got {index!r}")
                check_int(int(index), "partition (a sample index)", OWNER, minimum=0)
        return [list(map(int, part)) for part in partition]
    raise TypeError(f"{OWNER}: partition must be one of {list(partitions.PARTITIONS)}, a list of index lists (one "
                    f"per client) or a function of a sample index, got {type(partition).__name__}")
