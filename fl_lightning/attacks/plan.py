"""The attacks of a run seen from the round loop: data poisoned once, then per-round hooks in list order."""
from __future__ import annotations

from typing import Sequence

from torch import Tensor

from fl_lightning.attacks import compose
from fl_lightning.attacks.base import Attack
from fl_lightning.context import BatchPoisoner, LocalConfig, RoundContext
from fl_lightning.data.base import TensorData

__all__ = ["AttackPlan"]


class AttackPlan:
    """Every (set-up) attack of a run over the run's clients; honest clients pass through untouched."""

    def __init__(self, attacks: Sequence[Attack], clients: Sequence[TensorData]) -> None:
        self.attacks = list(attacks)
        self.clients = clients
        self.attacker_ids = frozenset(compose.all_attacker_ids(self.attacks))
        # data poisoning happens once per attacking client, not every round (only attacks that override
        # poison_dataset touch the data; the others leave the client's own object in place)
        self._poisoned = {cid: compose.poison_client_data(self.attacks, cid, clients[cid])
                          for cid in sorted(self.attacker_ids)}

    def is_attacker(self, client_id: int) -> bool:
        """Whether ``client_id`` belongs to any attack."""
        return client_id in self.attacker_ids

    def client_data(self, client_id: int) -> TensorData:
        """The client's training data, poisoned for attackers."""
        return self._poisoned.get(client_id, self.clients[client_id])

    def local_config(self, client_id: int, round_idx: int, cfg: LocalConfig) -> LocalConfig:
        """The client's training settings after every active attack's overrides."""
        return compose.client_config(self.attacks, client_id, round_idx, cfg)

    def batch_poisoner(self, client_id: int, round_idx: int) -> BatchPoisoner | None:
        """A function poisoning each local batch, or ``None`` when no active attack does so."""
        return compose.batch_poisoner(self.attacks, client_id, round_idx)

    def poison_updates(self, updates: Tensor, ctx: RoundContext) -> Tensor:
        """The update matrix after every active attack's model poisoning, in list order."""
        return compose.poison_round_updates(self.attacks, updates, ctx)
