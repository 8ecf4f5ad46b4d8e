"""FederatedDataModule.from_datasets: any map-style dataset, as tensors when fixed and small, lazy otherwise."""
from __future__ import annotations

import random
import warnings

import pytest
import torch
from torch.utils.data import Dataset, IterableDataset, Subset, TensorDataset
from tests.data.data_samples import FlipImages, Squares, client_epochs, flipped, random_flip

from fl_lightning.data import FederatedDataModule, LazyData, TensorData


def test_dataset_without_targets_is_materialised_with_labels_from_one_pass() -> None:
    train, test = Squares(30), Squares(9)
    dm = FederatedDataModule.from_datasets(train, test, num_clients=3, partition="classes", classes_per_client=1)
    assert dm.num_classes == 3  # from the labels, read on demand
    dm.setup()
    assert train.reads <= 30 + 1 + 4  # one pass, plus the first sample and the randomness probe
    assert all(isinstance(c, TensorData) for c in dm.clients) and isinstance(dm.test, TensorData)
    for client in dm.clients:
        values = client.inputs[:, 0, 0].long()
        assert torch.equal(client.targets, values % 3)  # every input kept its own label
        assert len(set(client.targets.tolist())) == 1  # classes partition with one class each
    assert sorted(torch.cat([c.inputs[:, 0, 0] for c in dm.clients]).tolist()) == [float(i) for i in range(30)]
    assert dm.num_classes == 3 and dm.input_shape == (2, 3)
    assert dm.test.targets.tolist() == [i % 3 for i in range(9)]


def test_tensor_dataset_fast_path_equals_tensors() -> None:
    x = torch.randn(40, 5)
    y = torch.arange(40) % 4
    dm = FederatedDataModule.from_datasets(TensorDataset(x, y), TensorDataset(x[:8], y[:8]), num_clients=4, seed=3)
    dm.setup()
    for idx, client in zip(dm.client_indices, dm.clients):
        assert isinstance(client, TensorData)
        assert torch.equal(client.inputs, x[idx]) and torch.equal(client.targets, y[idx])
    assert dm.num_classes == 4 and dm.input_shape == (5,)
    inputs, targets = zip(*dm.test.test_batches(3))
    assert torch.equal(torch.cat(inputs), x[:8]) and torch.equal(torch.cat(targets), y[:8])
    assert [len(t) for t in targets] == [3, 3, 2]


def test_random_transform_stays_lazy_new_augmentations_every_epoch_and_reruns_are_identical() -> None:
    dm = FederatedDataModule.from_datasets(FlipImages(24, transform=random_flip), FlipImages(8), num_clients=2,
                                           seed=7)
    dm.setup()
    client = dm.clients[1]
    assert isinstance(client, LazyData) and not hasattr(client, "inputs")
    assert isinstance(dm.test, TensorData)  # no transform: fixed samples, materialised
    assert dm.input_shape == (1, 4, 4) and client.input_shape == (1, 4, 4)

    first = client_epochs(client, seed=7, round_idx=3, client=1)
    for epoch in first:
        for inputs, targets in epoch:
            values = inputs.amax(dim=(1, 2, 3)).long() - 1  # the sample's dataset index
            assert torch.equal(targets, values % 4)  # the labels travel with their samples
    # the same samples, keyed by dataset index: was each flipped in epoch 0 and in epoch 1?
    flips = []
    for epoch in first:
        inputs = torch.cat([b[0] for b in epoch])
        index = inputs.amax(dim=(1, 2, 3)).long()
        flips.append(flipped(inputs)[index.argsort()])
    assert flips[0].any() and not flips[0].all()
    assert not torch.equal(flips[0], flips[1])  # a new augmentation every epoch

    again = client_epochs(client, seed=7, round_idx=3, client=1)
    for epoch_a, epoch_b in zip(first, again):
        for (xa, ya), (xb, yb) in zip(epoch_a, epoch_b, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)  # bit-identical rerun
    other_round = client_epochs(client, seed=7, round_idx=4, client=1)
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(first[0], other_round[0]))


def test_lazy_round_after_resume_equals_the_round_in_a_full_run() -> None:
    """Batches depend only on the generator the engine seeds per client, not on what ran before."""
    dm = FederatedDataModule.from_datasets(FlipImages(20, transform=random_flip), num_clients=2, seed=1)
    dm.setup()
    full = [client_epochs(dm.clients[c], 1, r, c) for r in range(2) for c in range(2)]
    resumed = [client_epochs(dm.clients[c], 1, 1, c) for c in range(2)]
    for a, b in zip(full[2:], resumed):
        assert all(torch.equal(x[0], y[0]) for ea, eb in zip(a, b) for x, y in zip(ea, eb))


def test_lazy_batches_ignore_what_else_uses_the_generators() -> None:
    """Clients read in between (vmap) and dropout draws do not change a call's augmentations."""
    dm = FederatedDataModule.from_datasets(FlipImages(24, transform=random_flip), num_clients=2, seed=3)
    dm.setup()
    a, b = dm.clients
    order = [torch.arange(6), torch.arange(6, 12)]
    alone_a, alone_b = list(a.batches(order, seed=11)), list(b.batches(order, seed=12))
    reads_a, reads_b = a.batches(order, seed=11), b.batches(order, seed=12)
    mixed_a, mixed_b = [], []
    for _ in order:
        torch.rand(100)  # a dropout mask drawn between batches
        mixed_a.append(next(reads_a))
        mixed_b.append(next(reads_b))
    for alone, mixed in ((alone_a, mixed_a), (alone_b, mixed_b)):
        assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(alone, mixed, strict=True))
    assert not all(torch.equal(x[0], y[0]) for x, y in zip(a.batches(order, seed=11), a.batches(order, seed=13)))


def test_reading_with_a_seed_leaves_the_global_generator_alone() -> None:
    dm = FederatedDataModule.from_datasets(FlipImages(12, transform=random_flip), num_clients=1)
    dm.setup()
    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    list(dm.clients[0].batches([torch.arange(12)], seed=1))
    assert torch.equal(torch.rand(4), expected)
    torch.manual_seed(0)
    torch.empty((), dtype=torch.int64).random_()
    after_one_draw = torch.rand(4)
    torch.manual_seed(0)
    list(dm.clients[0].batches([torch.arange(12)]))  # without a seed: exactly one draw, made at the call
    assert torch.equal(torch.rand(4), after_one_draw)


def test_python_random_in_transform_is_reproducible_in_process() -> None:
    def python_flip(image: torch.Tensor) -> torch.Tensor:
        return image.flip(-1) if random.random() < 0.5 else image

    dm = FederatedDataModule.from_datasets(FlipImages(16, transform=python_flip), num_clients=1, seed=0)
    dm.setup()
    a = client_epochs(dm.clients[0], 0, 0, 0)
    b = client_epochs(dm.clients[0], 0, 0, 0)
    assert all(torch.equal(x[0], y[0]) for ea, eb in zip(a, b) for x, y in zip(ea, eb))


def test_lazy_with_worker_processes_is_reproducible() -> None:
    dm = FederatedDataModule.from_datasets(FlipImages(12, transform=random_flip), num_clients=1, seed=0,
                                           num_workers=1)
    dm.setup()
    a = client_epochs(dm.clients[0], 0, 0, 0, epochs=2, batch_size=6)
    b = client_epochs(dm.clients[0], 0, 0, 0, epochs=2, batch_size=6)
    assert all(torch.equal(x[0], y[0]) for ea, eb in zip(a, b) for x, y in zip(ea, eb))
    flips = [flipped(torch.cat([x for x, _ in e])) for e in a]
    assert flips[0].any() or flips[1].any()


@pytest.mark.parametrize("how", [{"materialize": False}, {"memory_budget_mb": 1e-4}])
def test_lazy_and_tensor_paths_give_the_same_batches_for_fixed_data(how: dict) -> None:
    tensors = FederatedDataModule.from_datasets(Squares(30), Squares(6), num_clients=3, seed=2)
    lazy = FederatedDataModule.from_datasets(Squares(30), Squares(6), num_clients=3, seed=2, **how)
    assert lazy.fingerprint == tensors.fingerprint
    assert lazy.dataset.lazy == {"train": True, "test": True}
    order = [torch.tensor([3, 0]), torch.tensor([1, 2, 4])]
    for t_client, l_client in zip(tensors.clients, lazy.clients):
        assert isinstance(l_client, LazyData)
        for (xt, yt), (xl, yl) in zip(t_client.batches(order), l_client.batches(order), strict=True):
            assert torch.equal(xt, xl) and torch.equal(yt, yl)
    assert torch.equal(tensors.client_class_histogram(), lazy.client_class_histogram())
    lazy_test = list(lazy.test.test_batches(4))
    assert [len(y) for _, y in lazy_test] == [4, 2]
    assert torch.equal(torch.cat([x for x, _ in lazy_test]), tensors.test.inputs)
    assert lazy.hparams()["dataset"] == "TorchDatasets(train=Squares[30], test=Squares[6])"


def test_lazy_with_targets_replaces_only_labels() -> None:
    dm = FederatedDataModule.from_datasets(FlipImages(12, transform=random_flip), num_clients=2)
    dm.setup()
    client = dm.clients[0]
    flipped_labels = client.with_targets(torch.full_like(client.targets, 9))
    assert isinstance(flipped_labels, LazyData) and torch.equal(flipped_labels.indices, client.indices)
    (inputs, targets), = flipped_labels.batches([torch.arange(len(client))])
    assert targets.tolist() == [9] * len(client) and inputs.shape == (len(client), 1, 4, 4)
    assert client.targets.ne(9).all()  # the original is untouched
    with pytest.raises(ValueError, match="3 targets for 6 samples"):
        client.with_targets(torch.zeros(3, dtype=torch.long))


class Unannounced(Squares):
    """Random noise added inside ``__getitem__`` with no ``transform`` attribute to say so."""

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x, y = super().__getitem__(i)
        return x + torch.rand(()), y


def test_randomness_without_a_transform_attribute_is_detected() -> None:
    dm = FederatedDataModule.from_datasets(Unannounced(12), num_clients=2)
    dm.setup()
    assert all(isinstance(c, LazyData) for c in dm.clients)
    forced = FederatedDataModule.from_datasets(Unannounced(12), num_clients=2, materialize=True)
    forced.setup()
    assert len(forced.clients) == 2 and all(isinstance(c, TensorData) for c in forced.clients) and forced.dataset.lazy["train"] is False


def test_probe_leaves_global_generators_as_they_were() -> None:
    torch.manual_seed(5)
    random.seed(5)
    expected = (torch.rand(3), random.random())
    torch.manual_seed(5)
    random.seed(5)
    FederatedDataModule.from_datasets(Unannounced(6), num_clients=2).setup()
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]


def test_torchvision_datasets_deterministic_transform_materialises_random_one_stays_lazy() -> None:
    from torchvision import transforms as T
    from torchvision.datasets import FakeData

    fixed = FakeData(size=20, image_size=(1, 6, 6), num_classes=3,
                     transform=T.Compose([T.ToTensor(), T.Normalize((0.5,), (0.5,))]))
    dm = FederatedDataModule.from_datasets(fixed, num_clients=2, num_classes=3)
    dm.setup()
    assert isinstance(dm.clients[0], TensorData) and dm.input_shape == (1, 6, 6)
    labels = torch.tensor([int(fixed[i][1]) for i in range(20)])
    assert torch.equal(torch.cat([c.targets for c in dm.clients]).sort().values, labels.sort().values)

    augmented = FakeData(size=20, image_size=(1, 6, 6), num_classes=3,
                         transform=T.Compose([T.RandomHorizontalFlip(), T.ToTensor()]))
    lazy = FederatedDataModule.from_datasets(augmented, num_clients=2, num_classes=3)
    lazy.setup()
    assert isinstance(lazy.clients[0], LazyData)
    assert torch.equal(lazy.client_class_histogram(), dm.client_class_histogram())


def test_pil_images_without_to_tensor_name_the_fix() -> None:
    from torchvision.datasets import FakeData

    with pytest.raises(ValueError, match=r"PIL\.Image\.Image, not a tensor; .*ToTensor\(\)"):
        FederatedDataModule.from_datasets(FakeData(size=4, image_size=(1, 4, 4)), num_clients=2).setup()


class Rows(Dataset):
    """Hugging Face style in torch format: dict rows, a label column readable without reading samples."""

    column_names = ["pixels", "label"]

    def __init__(self, n: int = 20) -> None:
        self.n, self.row_reads = n, 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key):
        if key == "label":
            return torch.arange(self.n) % 2
        self.row_reads += 1
        return {"pixels": torch.full((3,), float(key)), "label": torch.tensor(key % 2)}


def test_mapping_samples_with_a_label_column() -> None:
    rows = Rows(20)
    dm = FederatedDataModule.from_datasets(rows, num_clients=2, materialize=False, input_key="pixels")
    dm.setup()
    assert rows.row_reads == 1  # labels came from the column; only the first row was read (its shape)
    client = dm.clients[0]
    (inputs, targets), = client.batches([torch.arange(len(client))])
    assert torch.equal(inputs[:, 0].long() % 2, targets) and dm.num_classes == 2
    # without input_key the rows reach training_step as dicts, as a DataLoader collates them
    plain = FederatedDataModule.from_datasets(Rows(4), num_clients=2)
    plain.setup()
    (batch,) = plain.clients[0].batches([torch.arange(2)])
    assert set(batch) == {"pixels", "label"} and torch.equal(batch["label"], plain.clients[0].targets)
    with pytest.raises(ValueError, match=r"keys \['label', 'pixels'\] and target_key='y' is not one of them"):
        FederatedDataModule.from_datasets(Rows(4), num_clients=2, target_key="y").setup()


def test_subset_of_a_dataset_keeps_its_declared_labels() -> None:
    base = FlipImages(20)
    subset = Subset(base, list(range(5, 15)))
    dm = FederatedDataModule.from_datasets(subset, num_clients=2, materialize=False)
    dm.setup()
    assert sorted(torch.cat([c.targets for c in dm.clients]).tolist()) == sorted(base.targets[5:15])


def test_no_test_split_and_explicit_classes() -> None:
    dm = FederatedDataModule.from_datasets(Squares(12), num_clients=2, num_classes=5, class_names="abcde")
    dm.setup()
    assert dm.test is None and dm.num_classes == 5 and dm.dataset.class_names == tuple("abcde")
    assert dm.client_class_histogram().shape == (2, 5)


def test_wrong_arguments_name_the_setting() -> None:
    class Stream(IterableDataset):
        def __iter__(self):
            yield torch.zeros(1), 0

    with pytest.raises(TypeError, match="train is an IterableDataset"):
        FederatedDataModule.from_datasets(Stream(), num_clients=2)
    with pytest.raises(TypeError, match="test must be a map-style dataset"):
        FederatedDataModule.from_datasets(Squares(), 42, num_clients=2)
    with pytest.raises(TypeError, match="materialize must be True or False"):
        FederatedDataModule.from_datasets(Squares(), num_clients=2, materialize="yes")
    with pytest.raises(ValueError, match="num_workers must be an int >= 0, got -1"):
        FederatedDataModule.from_datasets(Squares(), num_clients=2, num_workers=-1)
    with pytest.raises(ValueError, match="class_names has 2 names for num_classes=3"):
        FederatedDataModule.from_datasets(Squares(), num_clients=2, num_classes=3, class_names=["a", "b"])
    with pytest.raises(ValueError, match="FederatedDataModule: num_clients must be an int >= 1, got 0"):
        FederatedDataModule.from_datasets(Squares(), num_clients=0)
    with pytest.raises(TypeError, match=r"dataset must be a FederatedDataset, got Squares; .*from_datasets"):
        FederatedDataModule(Squares(), num_clients=2)
    with pytest.raises(ValueError, match="unknown partition 'dirichlett' \\(did you mean 'dirichlet'\\?\\)"):
        FederatedDataModule.from_datasets(Squares(), num_clients=2, partition="dirichlett")
    with pytest.raises(TypeError, match="FederatedDataModule: seed must be an int"):
        FederatedDataModule.from_datasets(Squares(), num_clients=2, seed=1.5)
    with pytest.raises(ValueError, match="train_fraction must be a finite number > 0 and <= 1, got 1.5"):
        FederatedDataModule.from_datasets(Squares(), num_clients=2, train_fraction=1.5)


def test_float_labels_are_regression_targets_without_classes() -> None:
    data = TensorDataset(torch.randn(10, 2), torch.rand(10))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dm = FederatedDataModule.from_datasets(data, num_clients=2)
        dm.setup()
    assert dm.num_classes == 0 and not dm.has_class_labels
    assert dm.clients[0].targets.dtype == torch.float32
    with pytest.raises(ValueError, match=r"partition='classes' needs integer class labels, but the targets are "
                                         r"torch\.float32 \(a regression task\)"):
        FederatedDataModule.from_datasets(data, num_clients=2, partition="classes").setup()


def test_a_user_dataset_trains_through_the_trainer(tmp_path) -> None:
    """From the user's side: a TensorDataset of 8x8 images goes from from_datasets to trainer.test()."""
    from tests.helpers import TinyNet, make_trainer

    g = torch.Generator().manual_seed(0)
    y = torch.arange(160) % 4
    x = torch.randn(4, 1, 8, 8, generator=g)[y] + 0.3 * torch.randn(160, 1, 8, 8, generator=g)
    dm = FederatedDataModule.from_datasets(TensorDataset(x[:120], y[:120]), TensorDataset(x[120:], y[120:]),
                                           num_clients=4, seed=0)
    trainer = make_trainer(tmp_path, rounds=3)
    trainer.fit(TinyNet(), datamodule=dm)
    results = trainer.test()
    assert 0.0 <= results["test/acc"] <= 1.0 and results["test/acc"] > 0.6  # chance is 0.25 on 4 classes
