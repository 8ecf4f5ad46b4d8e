"""FedAvg: the sample-count weighted mean, the undefended baseline."""
from __future__ import annotations

from torch import Tensor

from fl_lightning.aggregators._common import check_updates, client_weights
from fl_lightning.aggregators.base import AggregationResult, Aggregator
from fl_lightning.aggregators.functional import fedavg
from fl_lightning.checks import check_bool
from fl_lightning.context import RoundContext


class FedAvg(Aggregator):
    """Weighted mean of the updates (McMahan et al. 2017); weights are the clients' sample counts.

    Non-finite updates are dropped (weight 0, flagged); nothing else is flagged.
    """

    #: the mean singles out no client, however many there are
    min_robust_clients = 0

    def __init__(self, weighted: bool = True) -> None:
        check_bool(weighted, "weighted", "FedAvg")
        self.weighted = weighted

    def aggregate(self, updates: Tensor, ctx: RoundContext) -> AggregationResult:
        """The weighted mean of the finite rows."""
        finite = check_updates(updates, "FedAvg", ctx)
        weights = client_weights(ctx, finite, self.weighted, "FedAvg")
        return AggregationResult(fedavg(updates, weights, finite=finite), weights, {"flagged": ~finite})
