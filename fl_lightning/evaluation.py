"""Evaluate the global model on the test set: the module's own ``test_step`` logs, or accuracy and loss; attack metrics."""
from __future__ import annotations

from typing import Any, Sequence

import lightning as L
import torch
from torch import Tensor

from fl_lightning.attacks.base import Attack
from fl_lightning.attacks.compose import attack_metrics, update_attack_metrics
from fl_lightning.module_contract import LoggedValues, detached_logging, loss_fn, overrides, predict_fn

#: the module's own evaluation step, in the order one is chosen: (step, its epoch hooks' prefix)
_EVAL_STEPS = (("test_step", "on_test_epoch"), ("validation_step", "on_validation_epoch"))


def evaluation_step(module: L.LightningModule) -> tuple[str, str] | None:
    """``(step name, hook prefix)`` of the ``test_step`` (else ``validation_step``) the module defines, or ``None``."""
    for step, hooks in _EVAL_STEPS:
        if overrides(module, step):
            return step, hooks
    return None


@torch.no_grad()
def evaluate(module: L.LightningModule, test: Any, attacks: Sequence[Attack],
             batch_size: int = 1000) -> dict[str, float]:
    """The round's test metrics for the module as it is now; ``{}`` when there is no test data.

    A module with ``test_step`` (or ``validation_step``) gets what it ``self.log``s there (each name's
    mean over the test set, weighted by batch size; a name without a ``/`` becomes ``test/<name>``).
    Any other module gets ``test/acc`` and ``test/loss`` from its ``forward`` and
    :mod:`~fl_lightning.module_contract`. Attack metrics come from ``forward`` + ``predict`` either way.
    """
    if test is None:
        return {}
    was_training = module.training
    module.eval()
    try:
        own = evaluation_step(module)
        metric_sets = attack_metrics(attacks)
        device = module.device
        for _, metrics in metric_sets:
            for metric in metrics.values():
                metric.to(device)
        if own is None:
            results = _default_pass(module, test, metric_sets, batch_size, device)
        else:
            results = _own_pass(module, test, own, batch_size, device)
            if any(metrics for _, metrics in metric_sets):
                _default_pass(module, test, metric_sets, batch_size, device)
        for _, metrics in metric_sets:
            for name, metric in metrics.items():
                results[name] = float(metric.compute())
    finally:
        module.train(was_training)
    return results


def _own_pass(module: L.LightningModule, test: Any, own: tuple[str, str], batch_size: int,
              device: torch.device) -> dict[str, float]:
    """Run the module's test / validation step over the test batches and collect what it logs."""
    step_name, hooks = own
    step = getattr(module, step_name)
    logged = LoggedValues()
    current = [1.0]
    with detached_logging(module, logged, weight=lambda: current[0]):
        getattr(module, f"{hooks}_start")()
        for batch_idx, (inputs, targets) in enumerate(test.test_batches(batch_size)):
            current[0] = float(len(targets))
            step((inputs.to(device), targets.to(device)), batch_idx)
        current[0] = 1.0
        getattr(module, f"{hooks}_end")()
    return {(name if "/" in name else f"test/{name}"): value for name, value in logged.means().items()}


def _default_pass(module: L.LightningModule, test: Any, metric_sets: list, batch_size: int,
                  device: torch.device) -> dict[str, float]:
    """``test/acc`` and ``test/loss`` from forward + predict, feeding every attack metric on the way."""
    loss_of, predict_of = loss_fn(module), predict_fn(module)

    def predict(inputs: Tensor) -> Tensor:
        return predict_of(module(inputs))

    correct, loss_sum, seen = 0, 0.0, 0
    for inputs, targets in test.test_batches(batch_size):
        inputs, targets = inputs.to(device), targets.to(device)
        logits = module(inputs)
        preds = predict_of(logits)
        correct += int((preds == targets.reshape(preds.shape)).sum())
        loss_sum += float(loss_of(logits, targets)) * len(targets)
        seen += len(targets)
        update_attack_metrics(metric_sets, predict, inputs, targets, preds)
    return {"test/acc": correct / max(seen, 1), "test/loss": loss_sum / max(seen, 1)}
