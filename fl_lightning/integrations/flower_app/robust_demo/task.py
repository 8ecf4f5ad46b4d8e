"""The model and each SuperNode's data: y = x @ w_true + noise, 32 samples per partition."""
from __future__ import annotations

import torch
from torch import nn


def make_model() -> nn.Module:
    """A 4 -> 1 linear model with fixed initial weights."""
    torch.manual_seed(0)
    return nn.Linear(4, 1)


def partition(partition_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This SuperNode's 32 samples of the shared linear task."""
    g = torch.Generator().manual_seed(1000 + partition_id)
    x = torch.randn(32, 4, generator=g)
    w_true = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    return x, x @ w_true + 0.01 * torch.randn(32, 1, generator=g)
