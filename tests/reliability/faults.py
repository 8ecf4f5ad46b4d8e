"""Faults the reliability tests inject: huge inputs (BatchNorm statistics overflow), set update values,
crashing clients, a simulated kill after a chosen round, and a log of the global model after every round."""
from __future__ import annotations

from typing import Sequence

import torch

from fl_lightning import Attack, FederatedCallback


class HugeInputs(Attack):
    """Its clients' inputs are scaled by ``scale``: BatchNorm's running variance overflows, parameters stay finite."""

    def __init__(self, scale: float = 1e20, **kwargs) -> None:
        super().__init__(**kwargs)
        self.scale = scale

    def poison_batch(self, client_id, inputs, targets, generator):
        return inputs * self.scale, targets


class SetUpdates(Attack):
    """Its clients send ``value`` in every coordinate (every ``stride``-th one with ``stride`` > 1)."""

    def __init__(self, value: float = 3e38, stride: int = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.value, self.stride = value, stride

    def poison_updates(self, updates, ctx):
        for row in self.attacker_rows(ctx):
            updates[row, ::self.stride] = self.value
        return updates


class CrashingClients(Attack):
    """Local training of its clients raises (a failing device)."""

    def poison_batch(self, client_id, inputs, targets, generator):
        raise RuntimeError(f"device {client_id} failed")


class Killed(KeyboardInterrupt):
    """A simulated kill (Ctrl-C) of the fitting process."""


class KillAfterRound(FederatedCallback):
    """Raises :class:`Killed` once round ``round_idx`` is logged, before its checkpoint is written."""

    def __init__(self, round_idx: int, aggregator: str | None = None) -> None:
        self.round_idx, self.aggregator = round_idx, aggregator

    def on_round_logged(self, trainer, record):
        if record.round == self.round_idx and self.aggregator in (None, type(trainer.aggregator).__name__):
            raise Killed(f"killed after round {record.round}")


class GlobalLog(FederatedCallback):
    """The global parameters and buffers after every round."""

    def __init__(self) -> None:
        self.params: list[torch.Tensor] = []
        self.buffers: list[torch.Tensor] = []

    def on_round_end(self, trainer, record):
        self.params.append(trainer.global_params.clone())
        self.buffers.append(trainer.global_buffers.clone())


def all_finite(tensors: Sequence[torch.Tensor]) -> bool:
    """Whether every tensor holds only finite values."""
    return all(bool(torch.isfinite(t).all()) for t in tensors)
