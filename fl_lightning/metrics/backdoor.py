"""Backdoor attack success rate as a torchmetrics ``Metric``."""
from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from fl_lightning.metrics.functional import backdoor_success_counts


class BackdoorSuccessRate(Metric):
    """Share of triggered test samples, true label not ``target``, predicted as ``target``.

    Feed it the predictions on the *triggered* inputs and the true labels (see
    :func:`~fl_lightning.metrics.functional.backdoor_success_rate`).
    """

    higher_is_better = False
    full_state_update = False

    def __init__(self, target: int) -> None:
        super().__init__()
        self.target = target
        self.add_state("hits", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, preds: Tensor, targets: Tensor) -> None:
        """Accumulate one batch: classes predicted on triggered inputs, and the true labels."""
        hits, total = backdoor_success_counts(preds, targets, self.target)
        self.hits += hits
        self.total += total

    def compute(self) -> Tensor:
        """The rate over everything seen since the last reset (0 when no sample was eligible)."""
        return self.hits / self.total.clamp_min(1)
