"""FLTrust: trust clients by how their update agrees with the server's reference update."""
from __future__ import annotations

from torch import Tensor

from fl_lightning.aggregators._common import check_updates, normalised
from fl_lightning.aggregators.base import AggregationResult, Aggregator
from fl_lightning.aggregators.functional import fltrust_details
from fl_lightning.checks import check_int
from fl_lightning.context import RoundContext


class FLTrust(Aggregator):
    """FLTrust (Cao et al., NDSS 2021, eq. 1-3): trust score ``ReLU(cos(g_i, g_0))`` against the server's
    reference update ``g_0``, every update rescaled to ``||g_0||``, the trust-weighted mean.

    ``root_samples`` training samples are held out by the trainer as the server's root set; it trains
    one reference update on them each round and passes it as ``ctx.reference_update``. Clients with a
    zero trust score (pointing away from the reference) are flagged.
    """

    def __init__(self, root_samples: int = 100) -> None:
        self.root_samples = check_int(root_samples, "root_samples (the server's root set size)", "FLTrust",
                                      minimum=1)

    def aggregate(self, updates: Tensor, ctx: RoundContext) -> AggregationResult:
        """The trust-weighted mean of the rescaled updates."""
        finite = check_updates(updates, "FLTrust", ctx)
        reference = getattr(ctx, "reference_update", None)
        if reference is None:
            raise ValueError("FLTrust: the round context has no reference_update; the trainer must train the "
                             f"server's update on its root set ({self.root_samples} samples) each round")
        result = fltrust_details(updates, reference, finite=finite)
        scores = result.trust_scores.double()
        weights = normalised(scores, finite) if float(scores.sum()) > 0 else None
        return AggregationResult(result.aggregate, weights, {"flagged": (scores <= 0) | ~finite,
                                                             "trust_scores": result.trust_scores})
