"""Rules that average a subset of the clients: MDA, MoNNA and SMEA."""
from __future__ import annotations

from torch import Tensor

from fl_lightning.aggregators._common import check_updates
from fl_lightning.aggregators.base import AggregationResult, Aggregator
from fl_lightning.aggregators.functional import (
    SubsetResult, check_byzantine_count, mda_selection, monna_selection, smea_selection,
)
from fl_lightning.aggregators.functional._rules import MAJORITY
from fl_lightning.checks import check_optional_int
from fl_lightning.context import RoundContext


class _SubsetRule(Aggregator):
    """A rule that tolerates ``f`` Byzantine clients (``K > 2f``) by averaging a subset of the clients."""

    def __init__(self, f: int = 1) -> None:
        self.f = check_byzantine_count(f, type(self).__name__)

    @property
    def min_clients(self) -> int:  # type: ignore[override]
        """``2f + 1``."""
        return MAJORITY.minimum(self.f)

    def validate(self, clients_per_round: int) -> None:
        """``ValueError`` unless ``K > 2f``."""
        MAJORITY.check(clients_per_round, self.f, type(self).__name__, "clients per round")

    def _result(self, selection: SubsetResult, finite: Tensor) -> AggregationResult:
        weights = selection.selected.float() / int(selection.selected.sum())
        return AggregationResult(selection.aggregate, weights, {"flagged": ~selection.selected | ~finite})


class MDA(_SubsetRule):
    """Minimum-diameter averaging (El Mhamdi et al., ICML 2018): the mean of the ``K - f`` clients with
    the smallest diameter. Examines all ``C(K, f)`` subsets; clients left out are flagged."""

    def aggregate(self, updates: Tensor, ctx: RoundContext) -> AggregationResult:
        """The mean of the minimum-diameter subset."""
        finite = check_updates(updates, "MDA", ctx)
        return self._result(mda_selection(updates, self.f, finite=finite), finite)


class SMEA(_SubsetRule):
    """Smallest maximum eigenvalue averaging (Allouah et al. 2024): the mean of the ``K - f`` clients whose
    covariance has the smallest top eigenvalue. Examines all ``C(K, f)`` subsets; the rest are flagged."""

    def aggregate(self, updates: Tensor, ctx: RoundContext) -> AggregationResult:
        """The mean of the subset with the smallest top covariance eigenvalue."""
        finite = check_updates(updates, "SMEA", ctx)
        return self._result(smea_selection(updates, self.f, finite=finite), finite)


class MoNNA(_SubsetRule):
    """MoNNA (Farhadkhani et al., ICML 2023 / "Robust collaborative learning with linear gradient
    overhead", Algorithm 1): the mean of the ``K - f`` updates nearest to a trusted client's.

    The trusted client is ``trusted`` (a client id, which must take part in every round), or, when
    ``None``, the client with the lowest id in the round: the paper's trusted node is the server's own
    honest worker, and with sampling the lowest id is the one choice every round can make alike.
    """

    def __init__(self, f: int = 1, trusted: int | None = None) -> None:
        super().__init__(f)
        self.trusted = check_optional_int(trusted, "trusted (the trusted client's id)", "MoNNA", minimum=0)

    def aggregate(self, updates: Tensor, ctx: RoundContext) -> AggregationResult:
        """The mean of the updates nearest the trusted client's."""
        finite = check_updates(updates, "MoNNA", ctx)
        ids = [int(c) for c in ctx.client_ids]
        if self.trusted is None:
            row = min(range(len(ids)), key=lambda r: (not bool(finite[r]), ids[r]))
        elif self.trusted in ids:
            row = ids.index(self.trusted)
        else:
            raise ValueError(f"MoNNA: the trusted client {self.trusted} is not among this round's clients {ids}; "
                             f"make it take part in every round or pass trusted=None")
        return self._result(monna_selection(updates, self.f, trusted=row, finite=finite), finite)
