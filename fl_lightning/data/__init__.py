"""Federated datasets, partitions and the data module."""
from fl_lightning.data.base import FederatedDataset, TensorData
from fl_lightning.data.datamodule import FederatedDataModule
from fl_lightning.data.mnist5k import MNIST5k

__all__ = ["FederatedDataModule", "FederatedDataset", "MNIST5k", "TensorData"]
