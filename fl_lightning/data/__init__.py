"""Federated datasets, partitions and the data module."""
from fl_lightning.data.amazon import AmazonReviews
from fl_lightning.data.base import ClientData, FederatedDataset, TensorData
from fl_lightning.data.cifar10 import CIFAR10
from fl_lightning.data.datamodule import FederatedDataModule
from fl_lightning.data.figures import class_histogram_figure
from fl_lightning.data.files import DataFileError, DataFileNotFoundError
from fl_lightning.data.lazy import LazyData
from fl_lightning.data.loan import LOAN_BACKDOOR_FEATURES, LOAN_FEATURES, LOAN_STATUSES, LendingClubLoan
from fl_lightning.data.mnist import MNIST
from fl_lightning.data.mnist5k import MNIST5k
from fl_lightning.data.partition import PARTITIONS
from fl_lightning.data.sample_data import SampleData
from fl_lightning.data.torch_datasets import TorchDatasets

__all__ = ["AmazonReviews", "CIFAR10", "ClientData", "DataFileError", "DataFileNotFoundError", "FederatedDataModule",
           "FederatedDataset", "LOAN_BACKDOOR_FEATURES", "LOAN_FEATURES", "LOAN_STATUSES", "LazyData", "LendingClubLoan",
           "MNIST", "MNIST5k", "PARTITIONS", "SampleData", "TensorData", "TorchDatasets", "class_histogram_figure"]
