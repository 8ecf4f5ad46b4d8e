"""Paper A.5 (under-represented data): the ``classes`` split with some holders of one class removed."""
from __future__ import annotations

import torch

from fl_lightning.checks import check_int, check_seed
from fl_lightning.data import partition as partitions
from fl_lightning.data.base import FederatedDataset, TensorData
from fl_lightning.seeding import numpy_rng


class DropHolders(FederatedDataset):
    """``dataset`` split like ``partition="classes"``, then ``holders`` of the clients holding ``drop_class`` removed.

    Use it with ``FederatedDataModule(DropHolders(...), partition="by_key", num_clients=None)``: the
    training set keeps only the remaining clients' samples, in their original order, and
    :meth:`partition_keys` names each sample's client, so the data module rebuilds exactly the
    ``classes`` partition of ``num_clients`` clients minus the removed ones (renumbered
    ``0..num_clients-holders-1``; ``train_fraction`` then keeps the same first share of each client).
    Which holders go is drawn with ``seed``, and removing ``h + 1`` holders removes the same clients
    as ``h`` plus one more, so a sweep over ``holders`` removes them one by one as in the paper.
    Keep ``seed`` equal to the trainer's seed to get the same split as the attack experiments.
    """

    def __init__(self, dataset: FederatedDataset, drop_class: int = 0, holders: int = 0, num_clients: int = 100,
                 classes_per_client: int = 2, seed: int = 0) -> None:
        check_int(holders, "holders", "DropHolders", minimum=0)
        check_int(drop_class, "drop_class", "DropHolders", minimum=0)
        check_int(num_clients, "num_clients", "DropHolders", minimum=1)
        check_int(classes_per_client, "classes_per_client", "DropHolders", minimum=1)
        check_seed(seed, "DropHolders")
        self.dataset = dataset
        self.drop_class, self.holders = drop_class, holders
        self.num_clients, self.classes_per_client, self.seed = num_clients, classes_per_client, seed
        self.num_classes = dataset.num_classes
        self.class_names = dataset.class_names
        self.removed_clients: list[int] = []
        self._keys: list[int] | None = None

    def load(self) -> tuple[TensorData, TensorData]:
        """The remaining clients' training samples (original order) and the full test set."""
        train, test = self.dataset.load()
        parts = partitions.classes(train.targets, self.num_clients, self.classes_per_client, self.seed)
        holders = [c for c, idx in enumerate(parts) if bool((train.targets[idx] == self.drop_class).any())]
        if self.holders > len(holders):
            raise ValueError(f"DropHolders: asked to remove {self.holders} holders of class {self.drop_class}, "
                             f"but only {len(holders)} of the {self.num_clients} clients hold it; "
                             f"ask for at most {len(holders)}")
        order = numpy_rng(self.seed, "drop_holders", self.drop_class).permutation(holders)
        self.removed_clients = sorted(int(c) for c in order[:self.holders])
        owner = torch.full((len(train),), -1, dtype=torch.long)
        for client, idx in enumerate(parts):
            owner[idx] = client
        keep = ~torch.isin(owner, torch.tensor(self.removed_clients, dtype=torch.long)) & (owner >= 0)
        self._keys = owner[keep].tolist()
        return train.subset(torch.nonzero(keep).flatten()), test

    def partition_keys(self) -> list | None:
        """The original client id of every kept training sample (after :meth:`load`)."""
        if self._keys is None:
            raise RuntimeError("DropHolders.partition_keys() needs load() first; FederatedDataModule.setup() "
                               "calls load() before asking for the keys")
        return self._keys

    def __repr__(self) -> str:
        return (f"DropHolders({self.dataset!r}, drop_class={self.drop_class}, holders={self.holders}, "
                f"num_clients={self.num_clients}, classes_per_client={self.classes_per_client}, seed={self.seed})")
