"""Coordinate-wise trimmed mean."""
from __future__ import annotations

from torch import Tensor

from fl_lightning.aggregators._common import check_number, check_updates, unweighted_result
from fl_lightning.aggregators.base import AggregationResult, Aggregator
from fl_lightning.aggregators.functional import trimmed_mean
from fl_lightning.context import RoundContext


class TrimmedMean(Aggregator):
    """Coordinate-wise trimmed mean (Yin et al. 2018): drops ``floor(beta K)`` values at each end."""

    def __init__(self, beta: float = 0.2) -> None:
        check_number(beta, "beta (the share trimmed at each end)", "TrimmedMean", 0.0, 0.5, low_inclusive=True)
        self.beta = beta

    def aggregate(self, updates: Tensor, ctx: RoundContext) -> AggregationResult:
        """The trimmed mean of every column over the finite rows."""
        finite = check_updates(updates, "TrimmedMean")
        return unweighted_result(trimmed_mean(updates, self.beta), finite, trimmed_per_side=int(self.beta * int(finite.sum())))
