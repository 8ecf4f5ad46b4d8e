"""The one definition of a client's batch order, shared by every engine."""
from __future__ import annotations

import torch
from torch import Tensor

from fl_lightning.context import LocalConfig


def epoch_batches(num_samples: int, batch_size: int, max_batches: int | None,
                  generator: torch.Generator) -> list[Tensor]:
    """One epoch's batches: index tensors of a fresh permutation drawn from ``generator``, at most ``max_batches``."""
    order = torch.randperm(num_samples, generator=generator)
    starts = range(0, num_samples, max(batch_size, 1))
    if max_batches is not None:
        starts = starts[:max(max_batches, 0)]
    return [order[start:start + batch_size] for start in starts]


def batch_size_of(config: LocalConfig, num_samples: int) -> int:
    """The client's batch size: the configured one, or the whole client (``None``)."""
    return config.batch_size or num_samples


def client_batches(num_samples: int, config: LocalConfig, seed: int) -> list[Tensor]:
    """Every epoch's batches of one client, drawn as the local loop draws them from ``seed``.

    Only valid when nothing else draws from the client's generator between epochs (no batch poisoner).
    """
    generator = torch.Generator().manual_seed(seed)
    size = batch_size_of(config, num_samples)
    return [batch for _ in range(config.epochs)
            for batch in epoch_batches(num_samples, size, config.max_batches_per_epoch, generator)]
