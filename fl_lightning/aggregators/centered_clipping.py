"""Centered clipping: average the updates after clipping them around a robust center."""
from __future__ import annotations

from typing import Any

from torch import Tensor

from fl_lightning.aggregators._common import check_updates
from fl_lightning.aggregators.base import AggregationResult, Aggregator
from fl_lightning.aggregators.functional import centered_clipping, row_distances
from fl_lightning.checks import check_choice, check_int, check_positive
from fl_lightning.context import RoundContext

CENTERS = ("median", "previous")


class CenteredClipping(Aggregator):
    """Centered clipping (Karimireddy et al. 2021), ``iters`` steps of radius ``tau``.

    ``center="median"`` starts each round at the coordinate median; ``"previous"`` at the previous
    round's aggregate (the paper's choice; kept in :meth:`state_dict`), the median in the first round.
    Clients farther than ``tau`` from the result are flagged (they were clipped).
    """

    def __init__(self, tau: float = 1.0, iters: int = 3, center: str = "median") -> None:
        check_positive(tau, "tau (the clipping radius)", "CenteredClipping")
        check_int(iters, "iters", "CenteredClipping", minimum=1)
        check_choice(center, CENTERS, "center", "CenteredClipping")
        self.tau = tau
        self.iters = iters
        self.center = center
        self._previous: Tensor | None = None

    def aggregate(self, updates: Tensor, ctx: RoundContext) -> AggregationResult:
        """Clip every update around the center and average, ``iters`` times."""
        finite = check_updates(updates, "CenteredClipping", ctx)
        start = self._previous if self.center == "previous" else None
        if start is not None and start.shape != updates.shape[1:]:
            start = None
        update = centered_clipping(updates, tau=self.tau, iters=self.iters, center=start, finite=finite)
        if self.center == "previous":
            self._previous = update.detach().clone()
        distances = row_distances(updates, update, finite=finite)
        flagged = distances > self.tau
        return AggregationResult(update, None, {"flagged": flagged,
                                                "clipped_fraction": float(flagged.float().mean())})

    def state_dict(self) -> dict[str, Any]:
        """The previous aggregate when ``center="previous"``."""
        return {"previous": self._previous}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self._previous = state.get("previous")
