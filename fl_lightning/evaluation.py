"""Evaluate the global model on the test set: the module's own ``test_step`` / ``validation_step`` logs, or accuracy; attack metrics."""
from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, Sequence

import lightning as L
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch import Tensor

from fl_lightning.attacks.base import Attack
from fl_lightning.attacks.compose import attack_metrics, update_attack_metrics
from fl_lightning.labels import has_class_labels
from fl_lightning.module_contract import LoggedValues, detached_logging, loss_fn, overrides, predict_fn

#: the module's own evaluation steps, in the order they run: (step, its epoch hooks' prefix, log prefix)
_EVAL_STEPS = (("validation_step", "on_validation_epoch", "val"), ("test_step", "on_test_epoch", "test"))


def evaluation_steps(module: L.LightningModule) -> list[tuple[str, str, str]]:
    """``(step, hook prefix, log prefix)`` of each of ``validation_step`` / ``test_step`` the module defines."""
    return [entry for entry in _EVAL_STEPS if overrides(module, entry[0])]


def evaluation_step(module: L.LightningModule) -> tuple[str, str] | None:
    """``(step name, hook prefix)`` of the ``test_step`` (else ``validation_step``) the module defines, or ``None``."""
    steps = {step: hooks for step, hooks, _ in evaluation_steps(module)}
    for step in ("test_step", "validation_step"):
        if step in steps:
            return step, steps[step]
    return None


def _pairs_with_class_labels(test: Any) -> bool:
    """Whether the test data yields ``(inputs, integer labels)`` batches (not samples of another structure)."""
    return getattr(test, "yields_pairs", True) and has_class_labels(getattr(test, "targets", None))


@torch.no_grad()
def gives_class_scores(module: L.LightningModule, test: Any) -> bool:
    """Whether ``forward`` on the first test inputs returns a score per class (or one logit) per sample.

    Only then do the arg-max accuracy and the attack success rates mean anything. The probe runs
    in eval mode with torch's generators forked, so it changes neither the module nor the run.
    """
    if test is None or len(test) == 0 or not _pairs_with_class_labels(test):
        return False
    was_training = module.training
    module.eval()
    try:
        with torch.random.fork_rng(devices=[]):  # lazy test data draws its read seed from the global generator
            inputs, targets = next(iter(test.test_batches(min(len(test), 8))))
            output = module(inputs.to(module.device))
    except (NotImplementedError, TypeError):  # no forward, or one that needs more than the inputs
        return False
    finally:
        module.train(was_training)
    return (isinstance(output, Tensor) and output.is_floating_point() and output.dim() in (1, 2)
            and output.shape[0] == len(targets))


class Evaluator:
    """How the global model is evaluated, decided once per fit from the module and the test data.

    - ``validation_step`` / ``test_step``, each the module defines: what it ``self.log``s, as
      ``val/<name>`` / ``test/<name>`` (a name with a ``/`` is kept as it is); ``validation_step``
      runs on the validation split when the data has one, else on the test split;
    - neither, and ``forward`` gives class scores for integer labels: ``test/acc`` and ``test/loss``
      from ``forward`` and :mod:`~fl_lightning.module_contract` (the arg-max fallback);
    - neither, and no class scores: no test metrics (the round logs its training metrics), said once.

    Attack metrics (success rates) come from ``forward`` + ``predict`` whenever the module gives class scores.
    """

    def __init__(self, module: L.LightningModule, test: Any, attacks: Sequence[Attack], val: Any | None = None) -> None:
        self.steps = evaluation_steps(module)
        self.class_scores = gives_class_scores(module, test)
        self.attacks = list(attacks)
        self.note = ""
        if (test is not None or val is not None) and not self.steps and not self.class_scores:
            self.note = (f"{type(module).__name__} has no test_step or validation_step and its forward gives no "
                         "class scores for integer labels, so rounds report training metrics only; define "
                         "test_step to evaluate the global model")
            warnings.warn(self.note, UserWarning, stacklevel=4)

    @torch.no_grad()
    def __call__(self, module: L.LightningModule, test: Any, batch_size: int = 1000,
                 val: Any | None = None) -> dict[str, float]:
        """The round's evaluation metrics for the module as it is now; ``{}`` when there is no data to evaluate on.

        ``validation_step`` runs on ``val`` when there is one, else on ``test``; everything else on ``test``.
        """
        was_training = module.training
        module.eval()
        try:
            results: dict[str, float] = {}
            for step in self.steps:
                data = val if step[0] == "validation_step" and val is not None else test
                if data is not None:
                    results.update(_own_pass(module, data, step, batch_size, module.device))
            if test is not None and self.class_scores:
                results.update(self._class_score_pass(module, test, batch_size))
        finally:
            module.train(was_training)
        return results

    def _class_score_pass(self, module: L.LightningModule, test: Any, batch_size: int) -> dict[str, float]:
        """The arg-max fallback (only without evaluation steps) and the attack metrics, in one pass."""
        metric_sets = attack_metrics(self.attacks)
        for _, metrics in metric_sets:
            for metric in metrics.values():
                metric.to(module.device)
        results: dict[str, float] = {}
        if not self.steps:
            results.update(_default_pass(module, test, metric_sets, batch_size, module.device))
        elif any(metrics for _, metrics in metric_sets):
            _default_pass(module, test, metric_sets, batch_size, module.device)
        for _, metrics in metric_sets:
            for name, metric in metrics.items():
                results[name] = float(metric.compute())
        return results


def _batch_size_of(batch: Any) -> float:
    """How many samples a collated batch holds (its first tensor's length), for weighting logged means."""
    if isinstance(batch, Tensor):
        return float(len(batch)) if batch.dim() else 1.0
    parts = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (list, tuple)) else ()
    for part in parts:
        size = _batch_size_of(part)
        if size:
            return size
    return 0.0


def _own_pass(module: L.LightningModule, test: Any, step_entry: tuple[str, str, str], batch_size: int,
              device: torch.device) -> dict[str, float]:
    """Run one of the module's evaluation steps over the test batches and collect what it logs."""
    step_name, hooks, prefix = step_entry
    step = getattr(module, step_name)
    logged = LoggedValues()
    current = [1.0]
    with detached_logging(module, logged, weight=lambda: current[0]):
        getattr(module, f"{hooks}_start")()
        for batch_idx, batch in enumerate(test.test_batches(batch_size)):
            current[0] = _batch_size_of(batch) or 1.0
            step(move_data_to_device(batch, device), batch_idx)
        current[0] = 1.0
        getattr(module, f"{hooks}_end")()
    return {(name if "/" in name else f"{prefix}/{name}"): value for name, value in logged.means().items()}


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
