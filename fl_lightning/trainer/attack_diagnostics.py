"""The attackers' own local models on the test set, each round: did the attack learn, or did the defense stop it?

``attack/local_acc`` (and every attack metric, ``attack/backdoor_asr`` -> ``attack/local_backdoor_asr``)
is the mean over the round's active attackers of their freshly trained local model, measured before
any model poisoning (a boost) and before aggregation. A warning names an attacker whose local training
diverged: a non-finite loss or model, an exploding training loss, or a model predicting one class.
"""
from __future__ import annotations

import math
import statistics
import warnings
from typing import Any, Sequence

import lightning as L
import torch
from torch import Tensor

from fl_lightning.attacks.base import Attack
from fl_lightning.engines.base import ClientOutcome
from fl_lightning.engines.module_weights import ModuleWeights
from fl_lightning.evaluation import Evaluator
from fl_lightning.module_contract import predict_fn

#: a training loss above this multiple of the round's median honest loss (and above 1) counts as exploding
EXPLODING_FACTOR = 10.0
#: a local model giving one class to at least this share of the test set is a constant predictor ...
CONSTANT_SHARE = 0.99
#: ... unless the test set itself is at least this dominated by one class
DOMINANT_LABEL_SHARE = 0.95


def local_name(key: str) -> str:
    """The log name of a global metric measured on the attackers' local models (``test/acc`` -> ``attack/local_acc``)."""
    leaf = key.split("/", 1)[1] if "/" in key else key
    return f"attack/local_{leaf}"


def active_attackers(attacks: Sequence[Attack], client_ids: Sequence[int], round_idx: int) -> list[int]:
    """Rows of the round whose client belongs to an attack active in this round."""
    return [row for row, cid in enumerate(client_ids)
            if any(a.is_attacker(cid) and a.is_active(round_idx) for a in attacks)]


@torch.no_grad()
def prediction_shares(module: L.LightningModule, test: Any, batch_size: int = 1000) -> tuple[float, float]:
    """(largest share of the test set the module gives one class, largest share one true label has)."""
    predict = predict_fn(module)
    was_training = module.training
    module.eval()
    preds, labels = [], []
    try:
        for inputs, targets in test.test_batches(batch_size):
            preds.append(predict(module(inputs.to(module.device))).reshape(-1).cpu())
            labels.append(targets.reshape(-1).cpu())
    finally:
        module.train(was_training)
    if not preds:
        return 0.0, 0.0
    p, t = torch.cat(preds), torch.cat(labels)
    top = lambda v: float(torch.unique(v, return_counts=True)[1].max()) / max(len(v), 1)  # noqa: E731
    return top(p), top(t)


class AttackDiagnostics:
    """Measures the active attackers' local models each round and warns once per attacker and kind of divergence."""

    def __init__(self) -> None:
        self._warned: set[tuple[int, str]] = set()

    @torch.no_grad()
    def measure(self, round_idx: int, module: L.LightningModule, weights: ModuleWeights, global_params: Tensor,
                global_buffers: Tensor, updates: Tensor, local_buffers: Tensor, client_ids: Sequence[int],
                outcomes: Sequence[ClientOutcome], attacks: Sequence[Attack], test: Any,
                evaluator: Evaluator) -> dict[str, float]:
        """``attack/local_*`` means over the round's active attackers; the module holds the global model after.

        ``evaluator`` is the run's (the module's own test_step, or class scores); the constant-predictor check
        runs only where the module gives class scores for integer labels.
        """
        rows = [row for row in active_attackers(attacks, client_ids, round_idx) if outcomes[row].ok]
        if not rows or test is None:
            return {}
        honest = [o.train_loss for row, o in enumerate(outcomes)
                  if row not in rows and o.ok and math.isfinite(o.train_loss)]
        honest_median = statistics.median(honest) if honest else None
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        diverged = 0
        try:
            for row in rows:
                local = global_params + updates[row]
                reasons = self._loss_problems(outcomes[row].train_loss, honest_median)
                if not bool(torch.isfinite(local).all()):
                    reasons.append(("non-finite", "its local model holds NaN or Inf"))
                else:
                    weights.load(local, local_buffers[row])
                    for key, value in evaluator(module, test).items():
                        if math.isfinite(value):
                            name = local_name(key)
                            sums[name] = sums.get(name, 0.0) + value
                            counts[name] = counts.get(name, 0) + 1
                    share, label_share = prediction_shares(module, test) if evaluator.class_scores else (0.0, 1.0)
                    if share >= CONSTANT_SHARE and label_share < DOMINANT_LABEL_SHARE:
                        reasons.append(("constant", f"its local model predicts one class for {share:.1%} of the "
                                        "test set (a constant predictor: dead units or a learning rate too high)"))
                if reasons:
                    diverged += 1
                    self._warn(round_idx, client_ids[row], reasons)
        finally:
            weights.load(global_params, global_buffers)
        out = {name: sums[name] / counts[name] for name in sums}
        out["attack/local_diverged"] = float(diverged)
        return out

    @staticmethod
    def _loss_problems(loss: float, honest_median: float | None) -> list[tuple[str, str]]:
        if not math.isfinite(loss):
            return [("non-finite", f"its training loss is {loss}")]
        if honest_median is not None and loss > max(EXPLODING_FACTOR * honest_median, 1.0):
            return [("exploding", f"its training loss {loss:.3g} exploded (the honest clients' median: "
                                  f"{honest_median:.3g})")]
        return []

    def _warn(self, round_idx: int, client_id: int, reasons: list[tuple[str, str]]) -> None:
        fresh = [(kind, text) for kind, text in reasons if (client_id, kind) not in self._warned]
        if not fresh:
            return
        self._warned.update((client_id, kind) for kind, _ in fresh)
        warnings.warn(f"round {round_idx}: attacker client {client_id}'s local training diverged: "
                      f"{'; '.join(text for _, text in fresh)}; check the attack's lr / steps (attack/local_acc shows its model)",
                      RuntimeWarning, stacklevel=4)
