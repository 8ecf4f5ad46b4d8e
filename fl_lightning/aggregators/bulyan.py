"""Bulyan: Krum selection followed by a coordinate-wise trimmed mean around the median."""
from __future__ import annotations

import torch
from torch import Tensor

from fl_lightning.aggregators._common import check_updates
from fl_lightning.aggregators.base import AggregationResult, Aggregator
from fl_lightning.aggregators.functional import bulyan, bulyan_selection
from fl_lightning.aggregators.functional._rules import BULYAN
from fl_lightning.checks import check_int
from fl_lightning.context import RoundContext


class Bulyan(Aggregator):
    """Bulyan (El Mhamdi et al. 2018): tolerates ``f`` Byzantine clients, needs ``K >= 4f + 3``.

    No per-client weights (the last step is coordinate-wise); clients left out by the Krum stage are flagged.
    """

    def __init__(self, f: int = 1) -> None:
        check_int(f, "f (the number of Byzantine clients tolerated)", "Bulyan", minimum=0)
        self.f = f

    @property
    def min_clients(self) -> int:  # type: ignore[override]
        """``4f + 3``."""
        return BULYAN.minimum(self.f)

    def validate(self, clients_per_round: int) -> None:
        """``ValueError`` unless ``K >= 4f + 3``."""
        BULYAN.check(clients_per_round, self.f, "Bulyan", "clients per round")

    def aggregate(self, updates: Tensor, ctx: RoundContext) -> AggregationResult:
        """Bulyan's aggregate; ``flagged`` marks the clients its Krum stage did not select."""
        finite = check_updates(updates, "Bulyan", ctx)
        selection = bulyan_selection(updates, self.f, finite=finite)
        flagged = torch.ones(updates.shape[0], dtype=torch.bool, device=updates.device)
        flagged[selection] = False
        update = bulyan(updates, self.f, selection=selection, finite=finite)
        return AggregationResult(update, None, {"flagged": flagged})
