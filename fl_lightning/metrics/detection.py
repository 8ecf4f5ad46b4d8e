"""How well an aggregator's flagged clients match the true attackers, per round and cumulative."""
from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from fl_lightning.metrics.functional import IdSet, detection_counts, precision_recall_from_counts


class DetectionPrecisionRecall(Metric):
    """Precision and recall of flagged clients against the true attacker set.

    Call ``update(flagged_ids, attacker_ids, participating_ids)`` once per round. Calling the
    metric itself (``metric(flagged, attackers, participating)``) returns that round's
    ``{"precision", "recall"}`` and accumulates; :meth:`compute` returns the cumulative figures
    (summed true/false positives and false negatives over all rounds since the last reset).
    0/0 counts as 1, see :func:`~fl_lightning.metrics.functional.detection_precision_recall`.
    """

    higher_is_better = True
    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("tp", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("fp", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("fn", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, flagged_ids: IdSet, attacker_ids: IdSet, participating_ids: IdSet) -> None:
        """Accumulate one round (``flagged_ids`` may be a bool mask aligned with ``participating_ids``)."""
        tp, fp, fn = detection_counts(flagged_ids, attacker_ids, participating_ids)
        self.tp += tp.to(self.tp.device)
        self.fp += fp.to(self.fp.device)
        self.fn += fn.to(self.fn.device)

    def compute(self) -> dict[str, Tensor]:
        """``{"precision": ..., "recall": ...}`` over every round since the last reset."""
        return precision_recall_from_counts(self.tp, self.fp, self.fn)
