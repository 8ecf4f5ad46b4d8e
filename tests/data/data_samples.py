"""Small datasets and an engine stand-in shared by the data tests."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from fl_lightning.data import FederatedDataset, LazyData, TensorData
from fl_lightning.seeding import derive_seed


class Toy(FederatedDataset):
    """120 samples of 4 classes; keys are 3 states when ``keyed``."""

    num_classes = 4

    def __init__(self, keyed: bool = False) -> None:
        self.keyed = keyed

    def load(self) -> tuple[TensorData, TensorData]:
        y = torch.arange(120) % 4
        x = torch.arange(120, dtype=torch.float32).unsqueeze(1)
        return TensorData(x, y), TensorData(x[:8], y[:8])

    def partition_keys(self) -> list | None:
        return [("WA", "CA", "NY")[i % 3] for i in range(120)] if self.keyed else None


class Squares(Dataset):
    """A user's dataset without ``.targets``: sample i is a 2x3 tensor filled with i, label i % 3."""

    def __init__(self, n: int = 30) -> None:
        self.n, self.reads = n, 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        self.reads += 1
        return torch.full((2, 3), float(i)), i % 3


class FlipImages(Dataset):
    """torchvision-style: ``data``, ``targets`` and a ``transform`` that flips an image with probability 1/2.

    Image i is ``1x4x4`` with value ``i`` on its left column only, so a flip is visible.
    """

    def __init__(self, n: int = 24, transform=None) -> None:
        self.data = torch.zeros(n, 1, 4, 4)
        self.data[:, :, :, 0] = torch.arange(1, n + 1, dtype=torch.float32).view(n, 1, 1)
        self.targets = [i % 4 for i in range(n)]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = self.data[i]
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[i]


def random_flip(image: torch.Tensor) -> torch.Tensor:
    """Horizontal flip with probability 1/2, drawn from torch's global generator (as torchvision does)."""
    return image.flip(-1) if torch.rand(()) < 0.5 else image


def flipped(inputs: torch.Tensor) -> torch.Tensor:
    """Which images of a batch are flipped (value on the right column)."""
    return inputs[:, 0, 0, -1] != 0


def client_epochs(data: LazyData | TensorData, seed: int, round_idx: int, client: int, epochs: int = 2,
                  batch_size: int = 5) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    """What an engine does: seed the global generator per (seed, round, client), then ask for each epoch's batches."""
    client_seed = derive_seed(seed, "client", round_idx, client)
    torch.default_generator.manual_seed(client_seed)
    order_rng = torch.Generator().manual_seed(client_seed)
    return [list(data.batches(torch.randperm(len(data), generator=order_rng).split(batch_size)))
            for _ in range(epochs)]
