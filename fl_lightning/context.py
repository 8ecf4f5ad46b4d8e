"""What the round loop tells aggregators and attacks about the round in progress."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from fl_lightning.param_layout import ParamLayout


#: ``(inputs, targets, generator) -> (inputs, targets)``: an attack's per-batch data poisoning
BatchPoisoner = Callable[[Tensor, Tensor, torch.Generator], tuple[Tensor, Tensor]]


@dataclass
class RoundContext:
    """The round seen by an aggregator or an attack.

    Row ``k`` of the update matrix belongs to client ``client_ids[k]``. The true attacker set is
    deliberately absent: aggregators must not see it; attacks know their own clients.
    """

    round: int
    client_ids: list[int]
    num_samples: Tensor
    layout: ParamLayout
    global_params: Tensor
    seed: int = 0
    num_clients: int = 0
    #: ``[K]`` bool: which rows the round loop found finite in its one scan of the round (``None``:
    #: not scanned yet, so an aggregator must check itself)
    finite: Tensor | None = None
    #: ``[N]`` update the server trained on its own root data this round, for rules that ask for one
    #: through ``Aggregator.root_samples`` (FLTrust); ``None`` otherwise
    reference_update: Tensor | None = None
    #: the rule's weighting of the rows when they all agree (``Aggregator.nominal_weights``); ``None``: uniform
    weighting: "Callable[[RoundContext], Tensor] | None" = None

    def select(self, rows: list[int]) -> "RoundContext":
        """The same round restricted to the clients of ``rows`` (e.g. those whose update is usable)."""
        index = torch.tensor(rows, dtype=torch.long)
        finite = None if self.finite is None else self.finite.index_select(0, index.to(self.finite.device))
        return dataclasses.replace(self, client_ids=[self.client_ids[r] for r in rows],
                                   num_samples=self.num_samples.index_select(0, index.to(self.num_samples.device)),
                                   finite=finite)

    def nominal_weights(self) -> Tensor:
        """``[K]`` weights summing to 1 that the rule gives the rows when they all agree (model replacement's boost)."""
        if self.weighting is not None:
            return self.weighting(self)
        k = len(self.client_ids)
        return torch.full((k,), 1.0 / max(k, 1), device=self.num_samples.device)

    def generator(self, salt: int = 0) -> torch.Generator:
        """A generator seeded from (seed, round, salt): randomness that survives resume exactly."""
        from fl_lightning.seeding import derive_seed

        return torch.Generator().manual_seed(derive_seed(self.seed, "round", self.round, salt))


@dataclass
class LocalConfig:
    """How one client trains in one round; attacks may change it for their clients."""

    epochs: int
    lr: float | None = None
    batch_size: int | None = None
    max_batches_per_epoch: int | None = None
    #: a fixed number of optimizer steps instead of ``epochs`` (``None``: train ``epochs``), cycling
    #: the client's data in fresh passes (see :func:`fl_lightning.engines.batches.local_passes`)
    steps: int | None = None


@dataclass
class SetupContext:
    """What an attack may read at ``fit()`` start to resolve and validate its clients."""

    num_clients: int
    #: how many rounds the run has (an attack's ``rounds=`` is its schedule, a set of round indices)
    num_rounds: int
    seed: int
    client_targets: list[Tensor]
    num_classes: int
    input_shape: tuple[int, ...]
    layout: ParamLayout | None = None
    #: clients trained per round (``clients_per_round``, or every client)
    clients_per_round: int = 0
    #: the run's ``local_steps`` (``None``: clients train ``local_epochs``)
    local_steps: int | None = None
