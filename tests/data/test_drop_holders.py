"""DropHolders (paper A.5): the classes split minus some holders of one class, rebuilt by key."""
from __future__ import annotations

import pytest
import torch

from fl_lightning.data import FederatedDataModule, partition
from fl_lightning.data.drop_holders import DropHolders
from fl_lightning.data.synthetic import SyntheticDataset

BASE = SyntheticDataset([4], num_classes=5, n=400)


def _module(holders: int, train_fraction: float = 1.0) -> tuple[FederatedDataModule, DropHolders]:
    dataset = DropHolders(BASE, drop_class=0, holders=holders, num_clients=10, classes_per_client=2, seed=3)
    dm = FederatedDataModule(dataset, num_clients=None, partition="by_key", train_fraction=train_fraction, seed=3)
    dm.setup()
    return dm, dataset


def test_no_removal_rebuilds_the_classes_split_exactly() -> None:
    dm, _ = _module(0, train_fraction=0.7)
    train, _ = BASE.load()
    reference = FederatedDataModule(BASE, num_clients=10, partition="classes", classes_per_client=2,
                                    train_fraction=0.7, seed=3)
    reference.setup()
    assert dm.num_clients == 10
    for ours, theirs in zip(dm.clients, reference.clients):
        assert torch.equal(ours.inputs, theirs.inputs) and torch.equal(ours.targets, theirs.targets)


def test_holders_go_one_by_one_and_the_rest_stay_as_they_were() -> None:
    train, _ = BASE.load()
    parts = partition.classes(train.targets, 10, 2, 3)
    holders = [c for c, idx in enumerate(parts) if bool((train.targets[idx] == 0).any())]
    previous: list[int] = []
    for count in range(len(holders) + 1):
        dm, dataset = _module(count)
        assert len(dataset.removed_clients) == count and set(previous) <= set(dataset.removed_clients)
        assert set(dataset.removed_clients) <= set(holders)
        assert dm.num_clients == 10 - count
        kept = [c for c in range(10) if c not in dataset.removed_clients]
        for client, original in zip(dm.clients, kept):
            assert torch.equal(client.targets, train.targets[parts[original]])
        previous = dataset.removed_clients
    zeros = sum(int((c.targets == 0).sum()) for c in dm.clients)
    assert zeros == 0  # every holder of class 0 removed


def test_too_many_holders_and_keys_before_load_are_errors() -> None:
    with pytest.raises(ValueError, match="only 2 of the 10 clients hold it"):
        DropHolders(BASE, drop_class=0, holders=3, num_clients=10, classes_per_client=1).load()
    with pytest.raises(RuntimeError, match="load"):
        DropHolders(BASE).partition_keys()
    with pytest.raises(ValueError, match="holders must be an int >= 0"):
        DropHolders(BASE, holders=-1)
