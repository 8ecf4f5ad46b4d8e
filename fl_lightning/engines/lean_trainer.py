"""``self.trainer`` for a module trained by the lean loop: the parts of ``lightning.Trainer`` a module reads.

A module's ``configure_optimizers`` may read ``self.trainer.estimated_stepping_batches``; manual
optimization calls ``self.optimizers()``, ``self.lr_schedulers()``, ``self.manual_backward`` and
``self.clip_gradients``. All of these reach through ``module.trainer``, so the lean loop attaches a
:class:`LeanTrainer` while the client trains and detaches it afterwards.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import lightning as L
import torch
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.utilities import GradClipAlgorithmType
from torch import Tensor

from fl_lightning.engines.train_options import TrainOptions


class _LeanStrategy:
    """What ``optimizers()`` and ``manual_backward`` read from ``trainer.strategy``."""

    def __init__(self) -> None:
        self._lightning_optimizers: list[torch.optim.Optimizer] = []
        self.scaler: "torch.amp.GradScaler | None" = None

    def backward(self, loss: Tensor, optimizer: Any, *args: Any, **kwargs: Any) -> None:
        """``manual_backward``: backward through the fp16 scaler when there is one."""
        (loss if self.scaler is None else self.scaler.scale(loss)).backward(*args, **kwargs)


class LeanTrainer:
    """The stand-in ``module.trainer`` of one client's lean training (no ``lightning.Trainer`` is built)."""

    def __init__(self, module: L.LightningModule, options: TrainOptions, max_epochs: int) -> None:
        self.lightning_module = module
        self.strategy = _LeanStrategy()
        self.precision_plugin = Precision()
        self.gradient_clip_val = options.gradient_clip_val
        self.gradient_clip_algorithm = GradClipAlgorithmType(options.gradient_clip_algorithm)
        self.accumulate_grad_batches = options.accumulate_grad_batches
        self.estimated_stepping_batches = options.estimated_stepping_batches
        self.max_epochs = max_epochs
        self.current_epoch = 0
        self.global_step = 0
        self.optimizers: list[torch.optim.Optimizer] = []
        self.lr_scheduler_configs: list[Any] = []
        self.callback_metrics: dict[str, Tensor] = {}
        self.logger = None
        self.loggers: list[Any] = []
        self.training = True
        self.sanity_checking = False
        self.is_global_zero = True
        self.world_size = 1
        self.num_devices = 1

    def bind(self, optimizers: list[torch.optim.Optimizer], schedulers: list[Any],
             scaler: "torch.amp.GradScaler | None" = None) -> None:
        """Hold the client's optimizers and scheduler configs (what ``self.optimizers()`` returns)."""
        self.optimizers = list(optimizers)
        self.strategy._lightning_optimizers = list(optimizers)
        self.strategy.scaler = scaler
        self.lr_scheduler_configs = list(schedulers)


@contextlib.contextmanager
def attached(module: L.LightningModule, trainer: LeanTrainer) -> Iterator[LeanTrainer]:
    """``module.trainer`` is ``trainer`` inside the block; whatever it was before is put back afterwards."""
    previous = module._trainer
    module.trainer = trainer  # type: ignore[assignment]
    try:
        yield trainer
    finally:
        module.trainer = previous  # type: ignore[assignment]
