"""Residual-based reweighting (Fu et al. 2019), the project's centrepiece."""
from __future__ import annotations

import torch
from torch import Tensor

from fl_lightning.aggregators._common import check_updates, weighted_result
from fl_lightning.aggregators.base import AggregationResult, Aggregator
from fl_lightning.aggregators.functional import check_residual_reweight_options, residual_reweight_details
from fl_lightning.context import RoundContext


class ResidualReweight(Aggregator):
    """Residual-based reweighting: robust-line confidences per parameter, model weights from them.

    ``variant="reference"`` reproduces the authors' published behaviour (default), ``"paper"`` the
    printed Algorithm 1. As in the reference, 0-dim parameters (found through ``ctx.layout``) take
    no part in the confidences and are averaged with the final weights. Diagnostics: ``flagged``,
    ``replaced_fraction`` (share of values replaced by the line) and ``mean_confidence`` ``[K]``.
    """

    min_clients = 3
    #: with three clients the repeated-median line fits any single outlier at an end: four single one out
    min_robust_clients = 4

    def __init__(self, lambda_: float = 2.0, thresh: float = 0.1, estimator: str = "repeated_median",
                 weighting: str = "huber", variant: str = "reference", chunk_size: int | None = None) -> None:
        check_residual_reweight_options(lambda_, thresh, estimator, weighting, variant, chunk_size,
                                        name="ResidualReweight")
        self.lambda_ = lambda_
        self.thresh = thresh
        self.estimator = estimator
        self.weighting = weighting
        self.variant = variant
        self.chunk_size = chunk_size

    def aggregate(self, updates: Tensor, ctx: RoundContext) -> AggregationResult:
        """Reweight the clients by their residuals to the robust line of every parameter."""
        finite = check_updates(updates, "ResidualReweight", ctx)
        details = residual_reweight_details(
            updates, lambda_=self.lambda_, thresh=self.thresh, estimator=self.estimator,
            weighting=self.weighting, variant=self.variant, chunk_size=self.chunk_size,
            skip_columns=_scalar_columns(ctx, updates.shape[1], updates.device), finite=finite)
        return weighted_result(details.aggregate, details.client_weights, self.flag_fraction,
                               replaced_fraction=details.replaced_fraction,
                               mean_confidence=details.mean_confidence, raw_scores=details.raw_scores)


def _scalar_columns(ctx: RoundContext, n: int, device: torch.device) -> Tensor | None:
    """Columns of 0-dim parameters when the layout describes exactly the ``n`` columns, else None."""
    layout = getattr(ctx, "layout", None)
    if layout is None or layout.num_params != n:
        return None
    scalars = [spec.offset for spec in layout.params if len(spec.shape) == 0]
    if not scalars:
        return None
    mask = torch.zeros(n, dtype=torch.bool, device=device)
    mask[scalars] = True
    return mask
