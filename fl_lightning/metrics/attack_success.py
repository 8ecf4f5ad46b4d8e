"""Attack success rate of a label-flipping attack as a torchmetrics ``Metric``."""
from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from fl_lightning.metrics.functional import attack_success_counts


class AttackSuccessRate(Metric):
    """Share of test samples of ``source`` predicted as ``target`` (see ``attack_success_rate``)."""

    higher_is_better = False
    full_state_update = False

    def __init__(self, source: int | None, target: int | None) -> None:
        super().__init__()
        self.source, self.target = source, target
        self.add_state("hits", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, preds: Tensor, targets: Tensor) -> None:
        """Accumulate one batch of predicted and true classes."""
        hits, total = attack_success_counts(preds, targets, self.source, self.target)
        self.hits += hits
        self.total += total

    def compute(self) -> Tensor:
        """The rate over everything seen since the last reset."""
        return self.hits / self.total.clamp_min(1)
