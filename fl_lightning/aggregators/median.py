"""Coordinate-wise median."""
from __future__ import annotations

from torch import Tensor

from fl_lightning.aggregators._common import check_updates, unweighted_result
from fl_lightning.aggregators.base import AggregationResult, Aggregator
from fl_lightning.aggregators.functional import coordinate_median
from fl_lightning.context import RoundContext


class CoordinateMedian(Aggregator):
    """Coordinate-wise median (Yin et al. 2018); even K: mean of the two middle values. No client weights."""

    def aggregate(self, updates: Tensor, ctx: RoundContext) -> AggregationResult:
        """The median of every column over the finite rows."""
        finite = check_updates(updates, "CoordinateMedian", ctx)
        return unweighted_result(coordinate_median(updates, finite=finite), finite)
