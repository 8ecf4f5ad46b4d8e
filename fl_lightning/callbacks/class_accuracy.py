"""``ClassAccuracy``: per-class test accuracy every round (paper A.5 watches the removed digit)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch

from fl_lightning.callbacks.base import FederatedCallback
from fl_lightning.labels import require_labels
from fl_lightning.module_contract import predict_fn

if TYPE_CHECKING:
    from fl_lightning.trainer import FederatedTrainer, RoundRecord


class ClassAccuracy(FederatedCallback):
    """Adds ``test/acc_class{c}`` (share of test samples of class ``c`` predicted right) to every round.

    The values go into the round's metrics, which the trainer then logs and checkpoints with the round.
    """

    def __init__(self, classes: Sequence[int] = (0,), batch_size: int = 1000) -> None:
        self.classes = [int(c) for c in classes]
        if not self.classes:
            raise ValueError("ClassAccuracy: classes is empty; name at least one class")
        self.batch_size = batch_size

    def on_fit_start(self, trainer: "FederatedTrainer", module: "torch.nn.Module") -> None:
        """Refuse, before round 0, test data without integer class labels."""
        test = trainer.datamodule.test
        if test is not None:
            require_labels(test.targets, "ClassAccuracy")

    @torch.no_grad()
    def on_round_end(self, trainer: "FederatedTrainer", record: "RoundRecord") -> None:
        """Evaluate the new global model on each class's test samples."""
        module, test = trainer.module, trainer.datamodule.test
        bad = [c for c in self.classes if not 0 <= c < trainer.datamodule.num_classes]
        if bad:
            raise ValueError(f"ClassAccuracy: classes {bad} do not exist; the dataset has classes "
                             f"0..{trainer.datamodule.num_classes - 1}")
        was_training = module.training
        module.eval()
        predict = predict_fn(module)
        device = module.device
        order = list(torch.arange(len(test)).split(self.batch_size))
        preds = torch.cat([predict(module(inputs.to(device))) for inputs, _ in test.batches(order)])
        module.train(was_training)
        targets = test.targets.to(preds.device).reshape(preds.shape)
        scalars = {}
        for c in self.classes:
            mask = targets == c
            scalars[f"test/acc_class{c}"] = float((preds[mask] == c).float().mean()) if mask.any() else float("nan")
        record.metrics.update(scalars)
