"""Mean around the median, coordinate by coordinate."""
from __future__ import annotations

from torch import Tensor

from fl_lightning.aggregators._common import check_updates, unweighted_result
from fl_lightning.aggregators.base import AggregationResult
from fl_lightning.aggregators.functional import meamed
from fl_lightning.aggregators.subset_rules import _SubsetRule
from fl_lightning.context import RoundContext


class Meamed(_SubsetRule):
    """Mean around the median (Xie et al. 2018, Definition 5): per coordinate, the mean of the ``K - f``
    values closest to the median. Coordinate-wise, so no client weights; only non-finite rows are flagged."""

    def aggregate(self, updates: Tensor, ctx: RoundContext) -> AggregationResult:
        """The mean around the median of every column."""
        finite = check_updates(updates, "Meamed", ctx)
        return unweighted_result(meamed(updates, self.f, finite=finite), finite)
