"""Geometric median (RFA): the point minimising the sum of distances to the updates."""
from __future__ import annotations

import torch
from torch import Tensor

from fl_lightning.aggregators._common import check_updates, sample_weights, weighted_result
from fl_lightning.aggregators.base import AggregationResult, Aggregator
from fl_lightning.aggregators.functional import weiszfeld
from fl_lightning.checks import check_bool, check_int, check_positive
from fl_lightning.context import RoundContext


class GeometricMedian(Aggregator):
    """Geometric median by smoothed Weiszfeld (Pillutla et al. 2019, RFA); ``weighted`` uses sample counts.

    ``client_weights`` are the weights of the last Weiszfeld step (inverse distances, sum 1).
    """

    def __init__(self, tol: float = 1e-6, max_iter: int = 100, eps: float = 1e-6, weighted: bool = False) -> None:
        check_positive(tol, "tol", "GeometricMedian")
        check_positive(eps, "eps (the smoothing distance)", "GeometricMedian")
        check_int(max_iter, "max_iter", "GeometricMedian", minimum=1)
        check_bool(weighted, "weighted", "GeometricMedian")
        self.tol = tol
        self.max_iter = max_iter
        self.eps = eps
        self.weighted = weighted

    def aggregate(self, updates: Tensor, ctx: RoundContext) -> AggregationResult:
        """The geometric median of the finite rows."""
        finite = check_updates(updates, "GeometricMedian", ctx)
        alpha = sample_weights(ctx, updates.shape[0], "GeometricMedian", updates.device) if self.weighted else None
        if alpha is not None:
            alpha = torch.where(finite, alpha, torch.zeros_like(alpha))
        result = weiszfeld(updates, alpha, tol=self.tol, max_iter=self.max_iter, eps=self.eps,
                           finite=finite)
        return weighted_result(result.median, result.client_weights, self.flag_fraction,
                               iterations=result.iterations)
