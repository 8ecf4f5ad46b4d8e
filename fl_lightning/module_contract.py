"""What the round loop reads from a user's ``LightningModule`` besides ``training_step``: its loss and predictions.

A module may define ``loss(logits, targets)`` and ``predict(logits)``; a plain module gets the
classification defaults below. ``self.log`` outside a ``lightning.Trainer`` records into
:class:`LoggedValues` through :func:`detached_logging`. Engines, evaluation and callbacks import this, never ``models/``.
"""
from __future__ import annotations

import contextlib
from collections import defaultdict
from typing import Any, Callable, Iterator

import lightning as L
import torch.nn.functional as F
from torch import Tensor, nn


def classification_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy, or BCE with logits when the model has a single output."""
    if logits.dim() == 1 or logits.shape[-1] == 1:
        return F.binary_cross_entropy_with_logits(logits.reshape(-1), targets.reshape(-1).float())
    return F.cross_entropy(logits, targets)


def classification_predict(logits: Tensor) -> Tensor:
    """Arg-max class, or ``logit > 0`` when the model has a single output."""
    if logits.dim() == 1 or logits.shape[-1] == 1:
        return (logits.reshape(-1) > 0).long()
    return logits.argmax(dim=-1)


def loss_fn(module: nn.Module) -> Callable[[Tensor, Tensor], Tensor]:
    """The module's ``loss(logits, targets)`` if it has one, else cross-entropy (BCE for one logit)."""
    return getattr(module, "loss", classification_loss)


def predict_fn(module: nn.Module) -> Callable[[Tensor], Tensor]:
    """The module's ``predict(logits)`` if it has one, else arg-max (``logit > 0`` for one logit)."""
    return getattr(module, "predict", classification_predict)


def overrides(module: nn.Module, hook: str) -> bool:
    """Whether the module's class defines ``hook`` itself rather than inheriting Lightning's default."""
    return getattr(type(module), hook, None) is not getattr(L.LightningModule, hook, None)


class LoggedValues:
    """What a module ``self.log``s, step by step: running sums per name, and the latest value of each."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, float] = defaultdict(float)
        self.latest: dict[str, float] = {}
        self.metrics: dict[str, Any] = {}
        #: the names logged with ``prog_bar=True`` (shown beside the run's progress bar)
        self.prog_bar: set[str] = set()

    def add(self, name: str, value: Any, weight: float = 1.0) -> None:
        """Record one logged value (a number, a one-element tensor, or a torchmetrics ``Metric`` computed at the end)."""
        if hasattr(value, "compute") and not isinstance(value, Tensor):  # self.log("acc", self.accuracy)
            self.metrics[name] = value
            return
        number = float(value.detach().float().mean()) if isinstance(value, Tensor) else float(value)
        self.sums[name] += number * weight
        self.counts[name] += weight
        self.latest[name] = number

    def means(self) -> dict[str, float]:
        """Each name's (weighted) mean over the values logged; a logged ``Metric`` gives its ``compute()``."""
        means = {name: self.sums[name] / self.counts[name] for name in self.sums if self.counts[name] > 0}
        means.update({name: float(metric.compute()) for name, metric in self.metrics.items()})
        return means


@contextlib.contextmanager
def detached_logging(module: L.LightningModule, sink: dict[str, float] | LoggedValues,
                     weight: Callable[[], float] = lambda: 1.0) -> Iterator[None]:
    """Let ``self.log`` / ``self.log_dict`` in the user's steps record into ``sink`` instead of needing a Trainer.

    A plain dict keeps the last value of each name; a :class:`LoggedValues` keeps every value, weighted
    by ``weight()`` (the ``batch_size`` a call passes wins, as in Lightning).
    """

    def log(name: str, value: Any, *args: Any, batch_size: int | None = None, **kwargs: Any) -> None:
        if isinstance(sink, LoggedValues):
            sink.add(name, value, float(batch_size) if batch_size is not None else weight())
            if kwargs.get("prog_bar", args[0] if args else False):  # Lightning's third argument
                sink.prog_bar.add(name)
        else:
            sink[name] = float(value.detach()) if isinstance(value, Tensor) else float(value)

    def log_dict(values: dict, *args: Any, batch_size: int | None = None, **kwargs: Any) -> None:
        for name, value in values.items():
            log(name, value, batch_size=batch_size, prog_bar=kwargs.get("prog_bar", args[0] if args else False))

    module.log, module.log_dict = log, log_dict  # type: ignore[method-assign]
    try:
        yield
    finally:
        del module.log, module.log_dict
