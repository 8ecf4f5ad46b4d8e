"""Coordinate-wise repeated median, as the paper's baseline."""
from __future__ import annotations

from torch import Tensor

from fl_lightning.aggregators._common import check_updates, unweighted_result
from fl_lightning.aggregators.base import AggregationResult, Aggregator
from fl_lightning.aggregators.functional import repeated_median
from fl_lightning.context import RoundContext


class RepeatedMedian(Aggregator):
    """The repeated-median line (Siegel 1982) of every column at the middle rank, as the reference does.

    With the reference's intercept this equals the coordinate median (see ``functional.repeated_median``).
    """

    def aggregate(self, updates: Tensor, ctx: RoundContext) -> AggregationResult:
        """The line value at the middle rank of every column over the finite rows."""
        finite = check_updates(updates, "RepeatedMedian", ctx)
        return unweighted_result(repeated_median(updates, finite=finite), finite)
