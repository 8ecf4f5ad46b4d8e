"""Krum and Multi-Krum: keep the clients closest to their nearest neighbours."""
from __future__ import annotations

import torch
from torch import Tensor

from fl_lightning.aggregators._common import check_updates
from fl_lightning.aggregators.base import AggregationResult, Aggregator
from fl_lightning.aggregators.functional import _mean_of_rows, krum_ranking
from fl_lightning.aggregators.functional._rules import KRUM
from fl_lightning.checks import check_bool, check_int, check_optional_int
from fl_lightning.context import RoundContext


class Krum(Aggregator):
    """Krum (Blanchard et al. 2017); with ``m > 1`` Multi-Krum (El Mhamdi et al. 2018), the mean of the
    ``m`` best-scored updates. Tolerates ``f`` Byzantine clients; needs ``K > 2f + 2``.

    The selection is the one exact scores give; ``exact=False`` ranks from one float32 Gram matrix
    (faster; near-equal scores may then rank otherwise, see ``functional.krum_ranking``).
    """

    def __init__(self, f: int = 1, m: int | None = 1, exact: bool = True) -> None:
        name = type(self).__name__
        check_int(f, "f (the number of Byzantine clients tolerated)", name, minimum=0)
        check_optional_int(m, "m (the number of clients averaged)", name, minimum=1)
        self.f = f
        self.m = m
        self.exact = check_bool(exact, "exact", name)

    @property
    def min_clients(self) -> int:  # type: ignore[override]
        """``2f + 3`` (and at least ``m + f``)."""
        return max(KRUM.minimum(self.f), (self.m or 1) + self.f)

    def validate(self, clients_per_round: int) -> None:
        """``ValueError`` unless ``K > 2f + 2`` and ``m <= K - f``."""
        name = type(self).__name__
        KRUM.check(clients_per_round, self.f, name, "clients per round")
        if self.m is not None and self.m > clients_per_round - self.f:
            raise ValueError(f"{name} needs m <= K - f (m={self.m}, f={self.f}), got K={clients_per_round}")

    def aggregate(self, updates: Tensor, ctx: RoundContext) -> AggregationResult:
        """The mean of the ``m`` updates with the lowest Krum scores; the rest are flagged."""
        finite = check_updates(updates, type(self).__name__, ctx)
        k = int(finite.sum())
        m = self.m if self.m is not None else k - self.f
        if m > k - self.f:
            raise ValueError(f"{type(self).__name__} needs m <= K - f (m={m}, f={self.f}), got K={k} finite")
        # the m selected rows are exact; the float32 fast path may serve the scores of the others
        ranking = krum_ranking(updates, self.f, finite=finite, exact_prefix=max(m, 1), prefix_as_set=True,
                               exact=self.exact)
        chosen = ranking.order[:m].sort().values              # averaged in row order: the set decides
        weights = torch.zeros(updates.shape[0], device=updates.device)
        weights[chosen] = 1.0 / m
        return AggregationResult(_mean_of_rows(updates, chosen), weights,
                                 {"flagged": weights == 0, "krum_scores": ranking.scores.float()})


class MultiKrum(Krum):
    """Multi-Krum (El Mhamdi et al. 2018): the mean of the ``m`` best Krum-scored updates (default ``K - f``)."""

    def __init__(self, f: int = 1, m: int | None = None, exact: bool = True) -> None:
        super().__init__(f, m, exact)
