"""The attacks of a run seen from the round loop: poisoned client data, training overrides, update poisoning."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from fl_lightning.attacks.base import Attack
from fl_lightning.context import LocalConfig, RoundContext
from fl_lightning.data.base import TensorData
from fl_lightning.engines.base import BatchPoisoner


@dataclass
class AttackPlan:
    """Every attack of a run applied in list order; honest clients pass through untouched."""

    attacks: Sequence[Attack]
    clients: Sequence[TensorData]

    def __post_init__(self) -> None:
        self._poisoned: dict[int, TensorData] = {}
        for client_id in sorted(self.attacker_ids()):
            data = self.clients[client_id]
            inputs, targets = data.inputs, data.targets
            for attack in self.attacks:
                if attack.is_attacker(client_id):
                    inputs, targets = attack.poison_dataset(client_id, inputs, targets)
            if inputs is not data.inputs or targets is not data.targets:
                self._poisoned[client_id] = TensorData(inputs, targets)

    def attacker_ids(self) -> set[int]:
        """Every client that belongs to at least one attack."""
        return {cid for attack in self.attacks for cid in attack.attacker_ids}

    def is_attacker(self, client_id: int) -> bool:
        """Whether ``client_id`` belongs to any attack."""
        return any(attack.is_attacker(client_id) for attack in self.attacks)

    def client_data(self, client_id: int) -> TensorData:
        """The client's training data, poisoned once for attackers."""
        return self._poisoned.get(client_id, self.clients[client_id])

    def local_config(self, client_id: int, round_idx: int, cfg: LocalConfig) -> LocalConfig:
        """The client's training settings after every active attack's overrides."""
        for attack in self._active(client_id, round_idx):
            cfg = attack.local_config(client_id, round_idx, copy.copy(cfg))
        return cfg

    def batch_poisoner(self, client_id: int, round_idx: int) -> BatchPoisoner | None:
        """A function poisoning each local batch, or ``None`` when no active attack does so."""
        poisoners = [a for a in self._active(client_id, round_idx) if a.poisons_batches]
        if not poisoners:
            return None

        def poison(inputs: Tensor, targets: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
            for attack in poisoners:
                inputs, targets = attack.poison_batch(client_id, inputs, targets, generator)
            return inputs, targets

        return poison

    def poison_updates(self, updates: Tensor, ctx: RoundContext) -> Tensor:
        """The update matrix after every active attack's model poisoning, in list order."""
        for attack in self.attacks:
            if attack.is_active(ctx.round) and attack.attacker_rows(ctx):
                updates = attack.poison_updates(updates, ctx)
        return updates

    def _active(self, client_id: int, round_idx: int) -> list[Attack]:
        return [a for a in self.attacks if a.is_attacker(client_id) and a.is_active(round_idx)]


def attack_plan(attacks: Sequence[Attack], clients: Sequence[TensorData]) -> AttackPlan:
    """The plan of ``attacks`` (already set up) over the run's client data."""
    return AttackPlan(attacks, clients)


def detection_counts(flagged: set[int], attackers: set[int]) -> tuple[int, int, int]:
    """True positives, false positives and false negatives of flagged clients against the attackers."""
    return len(flagged & attackers), len(flagged - attackers), len(attackers - flagged)
