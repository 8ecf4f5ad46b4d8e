"""Bulyan: Krum selection followed by a coordinate-wise trimmed mean around the median."""
from __future__ import annotations

import torch
from torch import Tensor

from fl_lightning.aggregators._common import check_number, check_updates
from fl_lightning.aggregators.base import AggregationResult, Aggregator
from fl_lightning.aggregators.functional import bulyan, bulyan_selection
from fl_lightning.context import RoundContext


class Bulyan(Aggregator):
    """Bulyan (El Mhamdi et al. 2018): tolerates ``f`` Byzantine clients, needs ``K >= 4f + 3``.

    No per-client weights (the last step is coordinate-wise); clients left out by the Krum stage are flagged.
    """

    def __init__(self, f: int = 1) -> None:
        check_number(f, "f (the number of Byzantine clients tolerated)", "Bulyan", 0, low_inclusive=True,
                     integer=True)
        self.f = f

    @property
    def min_clients(self) -> int:  # type: ignore[override]
        """``4f + 3``."""
        return 4 * self.f + 3

    def validate(self, clients_per_round: int) -> None:
        """``ValueError`` unless ``K >= 4f + 3``."""
        if clients_per_round < 4 * self.f + 3:
            raise ValueError(f"Bulyan needs K >= 4f + 3 clients per round (f={self.f}: at least "
                             f"{4 * self.f + 3}), got {clients_per_round}; lower f or sample more clients")

    def aggregate(self, updates: Tensor, ctx: RoundContext) -> AggregationResult:
        """Bulyan's aggregate; ``flagged`` marks the clients its Krum stage did not select."""
        check_updates(updates, "Bulyan")
        selection = bulyan_selection(updates, self.f)
        flagged = torch.ones(updates.shape[0], dtype=torch.bool, device=updates.device)
        flagged[selection] = False
        return AggregationResult(bulyan(updates, self.f, selection=selection), None, {"flagged": flagged})
