"""Samples of any structure, labels only where a feature reads them, partitions that need none."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from fl_lightning.data import FederatedDataModule, SampleData, TensorData
from fl_lightning.data import partition as P
from fl_lightning.labels import MissingLabelsError


class Vectors(Dataset):
    """Unlabeled samples: each a tensor whose first value is its index (Lightning's ``RandomDataset`` shape)."""

    def __init__(self, n: int = 40, width: int = 3) -> None:
        self.data = torch.arange(n, dtype=torch.float32).view(n, 1).repeat(1, width)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.data[index]


class Rows(Dataset):
    """Dict samples with an integer label, as a module reading ``batch["x"]`` expects them."""

    def __init__(self, n: int = 30) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        return {"x": torch.full((2,), float(index)), "label": index % 3, "name": f"row{index}"}


class Triples(Dataset):
    """``(x, y, weight)`` samples: the module gets all three, the label is position 1."""

    def __len__(self) -> int:
        return 24

    def __getitem__(self, index: int) -> tuple:
        return torch.tensor([float(index)]), index % 2, torch.tensor(0.5)


def test_tensor_samples_reach_the_module_as_collated_tensors_without_labels() -> None:
    dm = FederatedDataModule.from_datasets(Vectors(40), num_clients=4, seed=1)
    dm.setup()
    assert all(isinstance(c, SampleData) and c.targets is None for c in dm.clients)
    assert dm.num_classes == 0 and not dm.has_class_labels and dm.input_shape == (3,)
    held = []
    for idx, client in zip(dm.client_indices, dm.clients):
        (batch,) = client.batches([torch.arange(len(client))])
        assert isinstance(batch, torch.Tensor) and batch.shape == (len(client), 3)
        assert torch.equal(batch[:, 0], idx.float())  # sample i of the training set is value i
        held.extend(idx.tolist())
    assert sorted(held) == list(range(40))  # iid accounts for every sample
    with pytest.raises(MissingLabelsError, match="client_class_histogram needs integer class labels, but the "
                                                 "samples carry none"):
        dm.client_class_histogram()


def test_dict_samples_stay_dicts_and_their_label_serves_label_partitions() -> None:
    dm = FederatedDataModule.from_datasets(Rows(30), num_clients=3, partition="classes", classes_per_client=1)
    dm.setup()
    for client in dm.clients:
        (batch,) = client.batches([torch.arange(len(client))])
        assert set(batch) == {"x", "label", "name"} and len(batch["name"]) == len(client)
        assert torch.equal(batch["label"], client.targets) and len(set(client.targets.tolist())) == 1
        assert torch.equal(batch["x"][:, 0].long() % 3, batch["label"])
    flipped = dm.clients[0].with_targets(torch.zeros(len(dm.clients[0]), dtype=torch.long) + 2)
    (batch,) = flipped.batches([torch.arange(len(flipped))])
    assert batch["label"].tolist() == [2] * len(flipped)  # a label flip rewrites the label field only
    assert torch.equal(batch["x"], next(iter(dm.clients[0].batches([torch.arange(len(flipped))])))["x"])


def test_longer_tuples_keep_every_field() -> None:
    dm = FederatedDataModule.from_datasets(Triples(), num_clients=2)
    dm.setup()
    x, y, w = next(iter(dm.clients[0].batches([torch.arange(4)])))
    assert x.shape == (4, 1) and torch.equal(y, x[:, 0].long() % 2) and torch.equal(w, torch.full((4,), 0.5))
    assert dm.num_classes == 2 and dm.has_class_labels


def test_label_partitions_refuse_unlabeled_data_naming_the_partition() -> None:
    for name in ("classes", "dirichlet"):
        with pytest.raises(MissingLabelsError, match=f"partition='{name}' needs integer class labels.*"
                                                     "use partition='iid' or 'size_skew'"):
            FederatedDataModule.from_datasets(Vectors(), num_clients=2, partition=name).setup()


def test_size_skew_accounts_for_every_sample_with_skewed_sizes() -> None:
    parts = P.size_skew(1000, 10, alpha=0.3, seed=0)
    sizes = [len(p) for p in parts]
    assert sum(sizes) == 1000 and min(sizes) >= 1 and max(sizes) > 3 * 1000 / 10 / 2
    assert sorted(torch.cat(parts).tolist()) == list(range(1000))
    assert P.fingerprint(parts) == P.fingerprint(P.size_skew(1000, 10, alpha=0.3, seed=0))
    assert P.fingerprint(parts) != P.fingerprint(P.size_skew(1000, 10, alpha=0.3, seed=1))
    tiny = P.size_skew(5, 5, alpha=0.01, seed=3)
    assert [len(p) for p in tiny] == [1] * 5
    dm = FederatedDataModule.from_datasets(Vectors(40), num_clients=4, partition="size_skew", alpha=0.5)
    dm.setup()
    assert sum(len(c) for c in dm.clients) == 40 and len({len(c) for c in dm.clients}) > 1


def test_partition_given_as_index_lists() -> None:
    lists = [[0, 1, 2], [5, 9], [3, 4, 6, 7, 8]]
    dm = FederatedDataModule.from_datasets(Vectors(10), num_clients=None, partition=lists)
    dm.setup()
    assert dm.num_clients == 3 and [c.tolist() for c in dm.client_indices] == lists
    with pytest.warns(UserWarning, match="leaves 7 of 10 training samples with no client"):
        FederatedDataModule.from_datasets(Vectors(10), num_clients=None, partition=[[0], [1, 2]]).setup()
    with pytest.raises(ValueError, match=r"client 1's indices must be in 0\.\.9"):
        FederatedDataModule.from_datasets(Vectors(10), num_clients=None, partition=[[0], [10]]).setup()
    with pytest.raises(ValueError, match="the index lists give 3 clients, but num_clients=2"):
        FederatedDataModule.from_datasets(Vectors(10), num_clients=2, partition=lists).setup()
    with pytest.raises(TypeError, match="partition must be one of"):
        FederatedDataModule.from_datasets(Vectors(10), num_clients=2, partition=3)


def test_partition_given_as_a_key_function() -> None:
    data = Vectors(12)
    dm = FederatedDataModule.from_datasets(data, num_clients=None, partition=lambda i: "even" if i % 2 == 0 else "odd")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dm.setup()
    assert dm.client_keys == ["even", "odd"]
    assert dm.client_indices[0].tolist() == list(range(0, 12, 2)) and dm.hparams()["partition"] == "key_function"


def test_classes_partition_says_how_many_samples_it_leaves_out() -> None:
    labels = torch.arange(100) % 10
    with pytest.warns(UserWarning, match=r"60 of 100 training samples are held by no client \(4 clients x 1 "
                                         r"classes = 4 shards for 10 classes leave 6 classes out\)"):
        P.classes(labels, 4, 1, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        P.classes(labels, 10, 1, seed=0)  # every sample placed: nothing to say


def test_pairs_with_scalar_labels_keep_the_tensor_fast_path() -> None:
    dm = FederatedDataModule.from_datasets(TensorDataset(torch.randn(20, 3), torch.arange(20) % 2), num_clients=2)
    dm.setup()
    assert all(isinstance(c, TensorData) for c in dm.clients)


class NoisyRows(Dataset):
    """Dict samples with a random augmentation on every read: they stay lazy, and seeded reads repeat."""

    def __len__(self) -> int:
        return 16

    def __getitem__(self, index: int) -> dict:
        return {"x": torch.full((2,), float(index)) + torch.rand(2), "label": index % 2}


def test_random_samples_of_any_structure_stay_lazy_and_seeded_reads_repeat() -> None:
    dm = FederatedDataModule.from_datasets(NoisyRows(), num_clients=2, partition="classes", classes_per_client=1)
    before = torch.random.get_rng_state()
    dm.setup()
    client = dm.clients[0]
    assert dm.dataset.lazy["train"] and isinstance(client.source, Dataset)
    order = [torch.tensor([0, 1, 2]), torch.tensor([3, 4])]
    first, again, other = (list(client.batches(order, seed=s)) for s in (5, 5, 6))
    for index, a, b, c in zip(order, first, again, other):
        assert torch.equal(a["x"], b["x"]) and not torch.equal(a["x"], c["x"])
        assert torch.equal(a["label"], client.targets[index])
    assert torch.equal(torch.random.get_rng_state(), before)  # reading left the global generator alone


def test_ray_engine_refuses_data_it_cannot_ship_as_tensors() -> None:
    pytest.importorskip("ray", reason="RayEngine needs ray (extra: ray)")
    from fl_lightning.context import LocalConfig
    from fl_lightning.engines import RayEngine
    from fl_lightning.engines.base import ClientTask

    dm = FederatedDataModule.from_datasets(Vectors(8), num_clients=2)
    dm.setup()
    task = ClientTask(1, dm.clients[1], LocalConfig(epochs=1), seed=0)
    with pytest.raises(TypeError, match="client 1 holds SampleData .*use engine='sequential' or 'lightning'"):
        RayEngine()._data_ref(task)
