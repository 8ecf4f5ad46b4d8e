"""Coordinate-wise trimmed mean."""
from __future__ import annotations

from torch import Tensor

from fl_lightning.aggregators._common import check_updates, unweighted_result
from fl_lightning.aggregators.base import AggregationResult, Aggregator
from fl_lightning.aggregators.functional import check_trim_share, trimmed_count, trimmed_mean
from fl_lightning.checks import check_optional_int
from fl_lightning.context import RoundContext


class TrimmedMean(Aggregator):
    """Coordinate-wise trimmed mean (Yin et al. 2018): drops ``floor(beta K)`` values at each end, or
    ``f`` values when the count ``f`` is given instead of the share ``beta`` (default ``beta=0.2``).
    """

    def __init__(self, beta: float | None = None, f: int | None = None) -> None:
        if beta is not None and f is not None:
            raise ValueError("TrimmedMean: give beta (a share) or f (a count of clients), not both")
        check_optional_int(f, "f (the values trimmed at each end)", "TrimmedMean", minimum=0)
        self.beta = check_trim_share(beta, "TrimmedMean") if beta is not None else (0.2 if f is None else None)
        self.f = f

    @property
    def min_clients(self) -> int:  # type: ignore[override]
        """``2f + 1`` when trimming a count ``f``, else 1."""
        return 2 * self.f + 1 if self.f is not None else 1

    def aggregate(self, updates: Tensor, ctx: RoundContext) -> AggregationResult:
        """The trimmed mean of every column over the finite rows."""
        finite = check_updates(updates, "TrimmedMean", ctx)
        drop = trimmed_count(int(finite.sum()), self.beta, self.f, "TrimmedMean")
        return unweighted_result(trimmed_mean(updates, f=drop, finite=finite), finite, trimmed_per_side=drop)
