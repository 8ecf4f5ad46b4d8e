"""FederatedDataModule: every partition, by_key clients, class histogram and its figure."""
from __future__ import annotations

import pytest
import torch
from tests.data.data_samples import Toy

from fl_lightning.data import FederatedDataModule, class_histogram_figure


@pytest.mark.parametrize("partition,kwargs", [
    ("iid", {}), ("classes", {"classes_per_client": 2}), ("classes", {"samples_per_class": 10}),
    ("dirichlet", {"alpha": 0.5}),
])
def test_partitions_give_clients(partition: str, kwargs: dict) -> None:
    dm = FederatedDataModule(Toy(), num_clients=6, partition=partition, seed=1, **kwargs)
    dm.setup()
    assert len(dm.clients) == dm.num_clients == 6
    hist = dm.client_class_histogram()
    assert hist.shape == (6, 4) and hist.dtype == torch.long
    assert hist.sum(dim=1).tolist() == [len(c) for c in dm.clients]
    assert dm.hparams()["partition"] == partition
    if "samples_per_class" in kwargs:
        assert set(hist[hist > 0].tolist()) == {10}


def test_dirichlet_fingerprint_depends_on_alpha_and_seed() -> None:
    def fp(alpha: float, seed: int) -> str:
        return FederatedDataModule(Toy(), num_clients=5, partition="dirichlet", alpha=alpha, seed=seed).fingerprint
    assert fp(0.9, 0) == fp(0.9, 0)
    assert fp(0.9, 0) != fp(0.9, 1)
    assert fp(0.9, 0) != fp(5.0, 0)


def test_by_key_clients_from_keys() -> None:
    dm = FederatedDataModule(Toy(keyed=True), num_clients=None, partition="by_key")
    dm.setup()
    assert dm.num_clients == 3 and dm.client_keys == ["CA", "NY", "WA"]
    assert [len(c) for c in dm.clients] == [40, 40, 40]
    assert torch.equal(dm.clients[0].inputs[:, 0] % 3, torch.ones(40))  # CA is every third from 1
    same = FederatedDataModule(Toy(keyed=True), num_clients=3, partition="by_key")
    assert same.fingerprint == dm.fingerprint


def test_by_key_errors() -> None:
    with pytest.raises(ValueError, match=r"3 clients, but num_clients=10; pass num_clients=None \(or 3\)"):
        FederatedDataModule(Toy(keyed=True), num_clients=10, partition="by_key").setup()
    with pytest.raises(ValueError, match="has none"):
        FederatedDataModule(Toy(), num_clients=None, partition="by_key").setup()
    with pytest.raises(ValueError, match="only works with partition='by_key'"):
        FederatedDataModule(Toy(), num_clients=None, partition="iid")


def test_unknown_partition_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown partition 'shards'.*'iid', 'classes', 'dirichlet', 'by_key'"):
        FederatedDataModule(Toy(), partition="shards")
    with pytest.raises(ValueError, match="FederatedDataModule: alpha must be a finite number > 0, got 0"):
        FederatedDataModule(Toy(), partition="dirichlet", alpha=0)
    with pytest.raises(ValueError, match="FederatedDataModule: samples_per_class must be an int >= 1, got 0"):
        FederatedDataModule(Toy(), partition="classes", samples_per_class=0)


def test_train_fraction_applies_to_histogram() -> None:
    dm = FederatedDataModule(Toy(), num_clients=4, partition="iid", train_fraction=0.5)
    assert dm.client_class_histogram().sum().item() == 60


def test_class_histogram_figure_renders() -> None:
    dm = FederatedDataModule(Toy(), num_clients=6, partition="dirichlet", seed=0)
    fig = class_histogram_figure(dm.client_class_histogram(), class_names=["a", "b", "c", "d"])
    fig.canvas.draw()
    width, height = fig.canvas.get_width_height()
    assert width > 100 and height > 100
    assert class_histogram_figure(torch.zeros(200, 10, dtype=torch.long)).axes
    with pytest.raises(ValueError, match="2-d"):
        class_histogram_figure(torch.zeros(3))
    with pytest.raises(ValueError, match="3 names for 4 classes"):
        class_histogram_figure(torch.zeros(2, 4), class_names=["a", "b", "c"])


def test_class_histogram_figure_goes_to_tensorboard(tmp_path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path))
    writer.add_figure("data/class_histogram", class_histogram_figure(torch.eye(3, dtype=torch.long)), 0)
    writer.close()
    assert any(tmp_path.iterdir())
