"""FederatedDataModule.from_lightning: a user's LightningDataModule, its hooks run in Lightning's order."""
from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from fl_lightning.data import FederatedDataModule, TensorData


class Digits(L.LightningDataModule):
    """A data module as a user writes it: data made in prepare_data/setup, served by dataloaders."""

    def __init__(self, with_test: bool = True) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.with_test = with_test
        self.num_classes = 5

    def prepare_data(self) -> None:
        self.calls.append("prepare_data")

    def setup(self, stage: str) -> None:
        self.calls.append(f"setup:{stage}")
        x = torch.arange(60, dtype=torch.float32).view(60, 1).repeat(1, 4)
        y = torch.arange(60) % 3
        if stage == "fit":
            self.train_set = TensorDataset(x[:50], y[:50])
        if stage == "test":
            self.test_set = TensorDataset(x[50:], y[50:])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=8, shuffle=True)

    def test_dataloader(self) -> DataLoader:
        if not self.with_test:
            raise AssertionError("not expected to be called")
        return DataLoader(self.test_set, batch_size=8)


def test_hooks_run_and_training_set_is_partitioned() -> None:
    source = Digits()
    dm = FederatedDataModule.from_lightning(source, num_clients=5, partition="iid", seed=2)
    assert source.calls == ["prepare_data", "setup:fit", "setup:test"]
    dm.setup()
    assert sum(len(c) for c in dm.clients) == 50 and all(isinstance(c, TensorData) for c in dm.clients)
    for idx, client in zip(dm.client_indices, dm.clients):
        assert torch.equal(client.inputs[:, 0], idx.float())  # sample i of the training set is value i
    assert dm.test.inputs[:, 0].tolist() == [float(v) for v in range(50, 60)]
    assert dm.num_classes == 5  # the data module's own num_classes wins over the labels' 3
    same = FederatedDataModule.from_lightning(Digits(), num_clients=5, partition="iid", seed=2)
    assert same.fingerprint == dm.fingerprint


class AttributesOnly(L.LightningDataModule):
    """No dataloaders: the datasets sit in ``train_dataset``; no test set."""

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.train_dataset = TensorDataset(torch.randn(12, 3), torch.arange(12) % 2)


def test_train_dataset_attribute_and_no_test() -> None:
    dm = FederatedDataModule.from_lightning(AttributesOnly(), num_clients=3, partition="classes",
                                            classes_per_client=1)
    dm.setup()
    assert dm.test is None and len(dm.clients) == 3 and dm.num_classes == 2


def test_errors_name_the_fix() -> None:
    with pytest.raises(TypeError, match=r"from_lightning: datamodule must be a LightningDataModule.*from_datasets"):
        FederatedDataModule.from_lightning(TensorDataset(torch.zeros(2)), num_clients=2)
    with pytest.raises(ValueError, match="defines no train_dataloader\\(\\).*define train_dataloader"):
        FederatedDataModule.from_lightning(L.LightningDataModule(), num_clients=2)


def test_lightning_shipped_data_module_and_a_subclass_of_it_use_its_hooks() -> None:
    from lightning.pytorch.demos import BoringDataModule

    from fl_lightning.data import SampleData

    class Smaller(BoringDataModule):
        """A user's subclass: its own setup, the dataloaders of Lightning's class."""

        def setup(self, stage: str) -> None:
            super().setup(stage)
            self.random_train = torch.utils.data.Subset(self.random_full, range(20))

    for source, train_size in ((BoringDataModule(), 64), (Smaller(), 20)):
        dm = FederatedDataModule.from_lightning(source, num_clients=4, seed=0)
        dm.setup()
        assert sum(len(c) for c in dm.clients) == train_size and isinstance(dm.clients[0], SampleData)
        assert dm.test is not None and dm.val is not None and dm.input_shape == (32,)
    with pytest.raises(ValueError, match="defines no train_dataloader"):
        FederatedDataModule.from_lightning(L.LightningDataModule(), num_clients=2)
