"""Norm clipping: bound every update's L2 norm, then average."""
from __future__ import annotations

from torch import Tensor

from fl_lightning.aggregators._common import check_updates, client_weights
from fl_lightning.aggregators.base import AggregationResult, Aggregator
from fl_lightning.aggregators.functional import norm_clipping, row_distances
from fl_lightning.checks import check_bool, check_positive
from fl_lightning.context import RoundContext


class NormClipping(Aggregator):
    """Mean of the updates after scaling each to norm at most ``max_norm`` (Sun et al. 2019).

    ``weighted`` averages with the sample counts. Clipped clients are flagged.
    """

    def __init__(self, max_norm: float = 1.0, weighted: bool = False) -> None:
        check_positive(max_norm, "max_norm", "NormClipping")
        check_bool(weighted, "weighted", "NormClipping")
        self.max_norm = max_norm
        self.weighted = weighted

    def aggregate(self, updates: Tensor, ctx: RoundContext) -> AggregationResult:
        """The (weighted) mean of the clipped updates."""
        finite = check_updates(updates, "NormClipping", ctx)
        weights = client_weights(ctx, finite, self.weighted, "NormClipping")
        update = norm_clipping(updates, self.max_norm, weights, finite=finite)
        flagged = row_distances(updates, finite=finite) > self.max_norm
        return AggregationResult(update, weights, {"flagged": flagged,
                                                   "clipped_fraction": float(flagged.float().mean())})
