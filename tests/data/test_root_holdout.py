"""setup(root_samples=n): FLTrust's server root set held out with the seed; n=0 keeps every partition as it was."""
from __future__ import annotations

import pytest
import torch
from tests.data.data_samples import FlipImages, Toy, random_flip

from fl_lightning.data import FederatedDataModule, LazyData, MNIST5k, TensorData

#: fingerprints of MNIST5k partitions (seed 0) computed before root hold-out and lazy data existed
PINNED = [("iid", 100, {}, "6e71a8df408518cf"), ("classes", 100, {"classes_per_client": 2}, "6b0d1cee380ca7b8"),
          ("dirichlet", 10, {"alpha": 0.9}, "ec1c5d4409043356")]


@pytest.mark.parametrize("partition,clients,kwargs,expected", PINNED)
def test_mnist5k_partitions_are_unchanged(partition: str, clients: int, kwargs: dict, expected: str) -> None:
    dm = FederatedDataModule(MNIST5k(), num_clients=clients, partition=partition, seed=0, **kwargs)
    dm.setup(root_samples=0)
    assert dm.fingerprint == expected and dm.root is None
    assert all(isinstance(c, TensorData) for c in dm.clients)  # the fast path
    assert dm.input_shape == (1, 28, 28)


def owned(dm: FederatedDataModule) -> torch.Tensor:
    """The training indices the clients hold (``Toy`` input i is the number i)."""
    return torch.cat([c.inputs[:, 0] for c in dm.clients]).long()


def test_root_is_held_out_before_partitioning() -> None:
    dm = FederatedDataModule(Toy(), num_clients=6, partition="iid", seed=4)
    dm.setup(root_samples=12)
    assert isinstance(dm.root, TensorData) and len(dm.root) == 12
    root = dm.root.inputs[:, 0].long()
    assert torch.equal(dm.root.targets, root % 4)  # labels stay with their samples
    clients = owned(dm)
    assert len(clients) == 108 and not set(root.tolist()) & set(clients.tolist())
    assert sorted(root.tolist() + clients.tolist()) == list(range(120))
    assert torch.equal(torch.cat(dm.client_indices).sort().values, clients.sort().values)  # original indices
    assert dm.hparams()["root_samples"] == 12

    again = FederatedDataModule(Toy(), num_clients=6, partition="iid", seed=4)
    again.setup(root_samples=12)
    assert torch.equal(again.root.inputs, dm.root.inputs) and again.fingerprint == dm.fingerprint
    other = FederatedDataModule(Toy(), num_clients=6, partition="iid", seed=5)
    other.setup(root_samples=12)
    assert not torch.equal(other.root.inputs, dm.root.inputs)


def test_back_to_zero_restores_the_plain_partition() -> None:
    plain = FederatedDataModule(Toy(), num_clients=4, partition="classes", seed=1)
    dm = FederatedDataModule(Toy(), num_clients=4, partition="classes", seed=1)
    dm.setup()
    before = dm.fingerprint
    dm.setup(root_samples=8)
    assert dm.fingerprint != before and len(owned(dm)) == 112
    dm.setup(root_samples=0)
    assert dm.root is None and dm.fingerprint == before == plain.fingerprint


def test_by_key_with_a_root_set_keeps_one_client_per_key() -> None:
    dm = FederatedDataModule(Toy(keyed=True), num_clients=None, partition="by_key")
    dm.setup(root_samples=9)
    assert dm.client_keys == ["CA", "NY", "WA"] and sum(len(c) for c in dm.clients) == 111
    for key, client in zip(dm.client_keys, dm.clients):
        positions = client.inputs[:, 0].long() % 3  # Toy's key of sample i is ("WA", "CA", "NY")[i % 3]
        assert set(positions.tolist()) == {("WA", "CA", "NY").index(key)}


def test_lazy_root_set() -> None:
    dm = FederatedDataModule.from_datasets(FlipImages(20, transform=random_flip), num_clients=2, seed=0)
    dm.setup(root_samples=4)
    assert isinstance(dm.root, LazyData) and len(dm.root) == 4 and dm.root.input_shape == (1, 4, 4)
    (inputs, targets), = dm.root.test_batches(10)
    assert inputs.shape == (4, 1, 4, 4) and torch.equal(targets, (inputs.amax(dim=(1, 2, 3)).long() - 1) % 4)


def test_root_samples_is_checked() -> None:
    dm = FederatedDataModule(Toy(), num_clients=4)
    with pytest.raises(ValueError, match="root_samples=120 leaves none of the 120 training samples"):
        dm.setup(root_samples=120)
    with pytest.raises(ValueError, match="FederatedDataModule: root_samples must be an int >= 0, got -1"):
        dm.setup(root_samples=-1)
    with pytest.raises(TypeError, match="FederatedDataModule: root_samples must be an int"):
        dm.setup(root_samples=2.5)
