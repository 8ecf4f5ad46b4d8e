"""The scalars a round adds to its record: client weights, aggregator diagnostics, clients and detection."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Collection, Sequence

import torch
from torch import Tensor

from fl_lightning.metrics.detection import DetectionPrecisionRecall

if TYPE_CHECKING:
    from fl_lightning.engines.base import ClientOutcome
    from fl_lightning.trainer.records import RoundRecord


def weight_scalars(client_weights: Tensor | None, client_ids: Sequence[int],
                   attacker_ids: Collection[int]) -> dict[str, float]:
    """Mean aggregation weight of the round's honest clients and of its attackers."""
    if client_weights is None:
        return {}
    is_attacker = torch.tensor([c in attacker_ids for c in client_ids], dtype=torch.bool)
    weights = client_weights.detach().float()
    scalars = {}
    if (~is_attacker).any():
        scalars["aggregator/weight_honest_mean"] = float(weights[~is_attacker].mean())
    if is_attacker.any():
        scalars["aggregator/weight_attackers_mean"] = float(weights[is_attacker].mean())
    return scalars


def diagnostic_scalars(diagnostics: dict[str, Any]) -> dict[str, float]:
    """The aggregator's scalar diagnostics as ``aggregator/<name>``, and how many clients it flagged."""
    scalars = {}
    for key, value in diagnostics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            scalars[f"aggregator/{key}"] = float(value)
        elif isinstance(value, Tensor) and value.numel() == 1 and value.is_floating_point():
            scalars[f"aggregator/{key}"] = float(value)
    flagged = diagnostics.get("flagged")
    if isinstance(flagged, Tensor):
        scalars["aggregator/flagged"] = float(flagged.sum())
    return scalars


def client_scalars(record: "RoundRecord", outcomes: Sequence["ClientOutcome"],
                   attacker_ids: Collection[int]) -> dict[str, float]:
    """Dropped and attacking clients, mean training loss of those that trained, total training seconds."""
    losses = [o.train_loss for o in outcomes if o.ok and not math.isnan(o.train_loss)]
    scalars = {"clients/dropped": float(len(record.dropped)),
               "clients/attackers": float(sum(c in attacker_ids for c in record.client_ids)),
               "clients/seconds": float(sum(o.seconds for o in outcomes))}
    if losses:
        scalars["clients/train_loss"] = sum(losses) / len(losses)
    return scalars


class DetectionTracker:
    """Cumulative precision / recall of the aggregator's flagged clients against the true attackers."""

    def __init__(self) -> None:
        self.metric = DetectionPrecisionRecall()

    def update(self, record: "RoundRecord", attacker_ids: Collection[int]) -> dict[str, float]:
        """Count the round's flags (when it aggregated) and return ``defense/precision`` and ``defense/recall``."""
        participating = [c for c in record.client_ids if c not in record.dropped]
        self.metric.update(record.flagged_ids, sorted(attacker_ids), participating)
        cumulative = self.metric.compute()
        return {"defense/precision": float(cumulative["precision"]), "defense/recall": float(cumulative["recall"])}

    def state_dict(self) -> dict[str, Tensor]:
        """The summed true/false positive and false negative counts."""
        return {name: getattr(self.metric, name).clone() for name in ("tp", "fp", "fn")}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore the counts :meth:`state_dict` returned."""
        for name, value in state.items():
            setattr(self.metric, name, value.clone())
