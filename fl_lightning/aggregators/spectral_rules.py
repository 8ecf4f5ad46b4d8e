"""Rules that filter clients along the directions of largest spread: CAF and DnC."""
from __future__ import annotations

import torch
from torch import Tensor

from fl_lightning.aggregators._common import check_updates, normalised, weighted_result
from fl_lightning.aggregators.base import AggregationResult
from fl_lightning.aggregators.functional import caf_details, dnc_selection
from fl_lightning.aggregators.subset_rules import _SubsetRule
from fl_lightning.checks import check_int, check_number
from fl_lightning.context import RoundContext
from fl_lightning.seeding import derive_seed


class CAF(_SubsetRule):
    """Covariance-bound agnostic filter (Allouah et al. 2024): down-weights clients along the top
    eigenvector of the weighted covariance until the weights sum to ``K - 2f``; returns the weighted mean
    of the step with the smallest top eigenvalue. ``client_weights`` are those filter weights, normalised."""

    def aggregate(self, updates: Tensor, ctx: RoundContext) -> AggregationResult:
        """The filtered weighted mean."""
        finite = check_updates(updates, "CAF", ctx)
        result = caf_details(updates, self.f, finite=finite)
        return weighted_result(result.aggregate, normalised(result.client_weights, finite), self.flag_fraction)


class DnC(_SubsetRule):
    """Divide and conquer (Shejwalkar & Houmansadr, NDSS 2021, Algorithm 2): ``niters`` random subsets of
    ``sub_dim`` coordinates; each removes the ``floor(c f)`` clients with the largest projection on the
    top singular vector; the mean of the clients no iteration removed. Removed clients are flagged.

    The coordinates are drawn from ``derive_seed(ctx.seed, "dnc", ctx.round)``: reproducible and
    unchanged by a resume.
    """

    def __init__(self, f: int = 1, niters: int = 5, sub_dim: int = 10000, c: float = 1.0) -> None:
        super().__init__(f)
        self.niters = check_int(niters, "niters", "DnC", minimum=1)
        self.sub_dim = check_int(sub_dim, "sub_dim (coordinates per iteration)", "DnC", minimum=1)
        self.c = check_number(c, "c (the filtering fraction)", "DnC", low=0.0)

    def aggregate(self, updates: Tensor, ctx: RoundContext) -> AggregationResult:
        """The mean of the clients every iteration kept."""
        finite = check_updates(updates, "DnC", ctx)
        generator = torch.Generator().manual_seed(derive_seed(ctx.seed, "dnc", ctx.round))
        selection = dnc_selection(updates, self.f, niters=self.niters, sub_dim=self.sub_dim, c=self.c,
                                  generator=generator, finite=finite)
        return self._result(selection, finite)
