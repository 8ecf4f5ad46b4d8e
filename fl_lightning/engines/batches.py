"""The one definition of a client's batch order, shared by every engine.

A client trains either ``epochs`` epochs (each at most ``max_batches_per_epoch`` batches) or, with
``LocalConfig.steps``, exactly ``steps`` optimizer steps: passes over its data, each a fresh
permutation, the last one cut short, so a client holding fewer batches than ``steps`` cycles its
data and one holding more sees part of it. ``max_batches_per_epoch`` does not apply to steps.

Converting a paper's "E epochs over n samples at batch B" to steps: ``E * ceil(n / B)`` (with a
cap of C batches per epoch, ``E * min(ceil(n / B), C)``). E.g. the paper's MNIST backdoor attacker:
10 epochs over about 4,100 images at batch 64 under a cap of 30: ``10 * min(65, 30) = 300`` steps
per round (its honest clients, 5 epochs: 150).
"""
from __future__ import annotations

import math

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


def steps_to_epochs(steps: int, num_samples: int, batch_size: int) -> int:
    """Passes over ``num_samples`` at ``batch_size`` that ``steps`` batches need (the last one partial)."""
    if steps <= 0 or num_samples <= 0:
        return 0
    return math.ceil(steps / math.ceil(num_samples / max(batch_size, 1)))


def local_passes(config: LocalConfig, num_samples: int) -> int:
    """How many passes (epochs, as the module's epoch hooks see them) the client makes over its data."""
    if config.steps is None:
        return config.epochs
    return steps_to_epochs(config.steps, num_samples, batch_size_of(config, num_samples))


def pass_batches(num_samples: int, config: LocalConfig, generator: torch.Generator, steps_done: int) -> list[Tensor]:
    """The next pass's batches drawn from ``generator``: an epoch, or in step mode at most the steps left."""
    size = batch_size_of(config, num_samples)
    cap = config.max_batches_per_epoch if config.steps is None else max(config.steps - steps_done, 0)
    return epoch_batches(num_samples, size, cap, generator)


def client_batches(num_samples: int, config: LocalConfig, seed: int) -> list[Tensor]:
    """Every pass's batches of one client, drawn as the local loop draws them from ``seed``.

    Only valid when nothing else draws from the client's generator between passes (no batch poisoner).
    """
    generator = torch.Generator().manual_seed(seed)
    out: list[Tensor] = []
    for _ in range(local_passes(config, num_samples)):
        out.extend(pass_batches(num_samples, config, generator, len(out)))
    return out
