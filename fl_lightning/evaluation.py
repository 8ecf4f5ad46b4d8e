"""Evaluate the global model on the test set: accuracy, loss and every attack's metrics."""
from __future__ import annotations

from typing import Sequence

import lightning as L
import torch
from torch import Tensor

from fl_lightning.attacks.base import Attack
from fl_lightning.attacks.compose import attack_metrics, update_attack_metrics
from fl_lightning.data.base import TensorData
from fl_lightning.module_contract import loss_fn, predict_fn


@torch.no_grad()
def evaluate(module: L.LightningModule, test: TensorData, attacks: Sequence[Attack],
             batch_size: int = 1000) -> dict[str, float]:
    """``test/acc``, ``test/loss`` and each attack metric of the module as it is now."""
    was_training = module.training
    module.eval()
    loss_of, predict_of = loss_fn(module), predict_fn(module)
    metric_sets = attack_metrics(attacks)

    def predict(inputs: Tensor) -> Tensor:
        return predict_of(module(inputs))

    correct, loss_sum, seen = 0, 0.0, 0
    for inputs, targets in test.batches(list(torch.arange(len(test)).split(batch_size))):
        logits = module(inputs)
        preds = predict_of(logits)
        correct += int((preds == targets.reshape(preds.shape)).sum())
        loss_sum += float(loss_of(logits, targets)) * len(targets)
        seen += len(targets)
        update_attack_metrics(metric_sets, predict, inputs, targets, preds)
    module.train(was_training)
    results = {"test/acc": correct / max(seen, 1), "test/loss": loss_sum / max(seen, 1)}
    for _, metrics in metric_sets:
        for name, metric in metrics.items():
            results[name] = float(metric.compute())
    return results
