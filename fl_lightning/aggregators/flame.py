"""FLAME: cluster by direction, clip to the median norm, add noise."""
from __future__ import annotations

import torch
from torch import Tensor

from fl_lightning.aggregators._common import check_updates
from fl_lightning.aggregators.base import AggregationResult, Aggregator
from fl_lightning.aggregators.functional import flame_details
from fl_lightning.checks import check_number
from fl_lightning.context import RoundContext
from fl_lightning.seeding import derive_seed


class FLAME(Aggregator):
    """FLAME (Nguyen et al., USENIX Security 2022, Algorithm 1): HDBSCAN on cosine distances admits the
    majority cluster, admitted updates are clipped to the median norm ``S_t`` and averaged, and
    Gaussian noise of standard deviation ``noise * S_t`` is added (``noise`` is the paper's lambda,
    0.001 for images, 0.01 for text). Outliers are flagged and get weight 0. Needs scikit-learn.

    The noise is drawn from ``derive_seed(ctx.seed, "flame", ctx.round)``.
    """

    def __init__(self, noise: float = 0.001) -> None:
        self.noise = check_number(noise, "noise (lambda, the noise scale relative to the median norm)", "FLAME",
                                  low=0.0)

    def aggregate(self, updates: Tensor, ctx: RoundContext) -> AggregationResult:
        """The noised mean of the clipped admitted updates."""
        finite = check_updates(updates, "FLAME", ctx)
        generator = torch.Generator().manual_seed(derive_seed(ctx.seed, "flame", ctx.round))
        result = flame_details(updates, noise=self.noise, generator=generator, finite=finite)
        weights = result.admitted.float() / int(result.admitted.sum())
        return AggregationResult(result.aggregate, weights, {"flagged": ~result.admitted | ~finite,
                                                             "clip_bound": result.clip_bound})
