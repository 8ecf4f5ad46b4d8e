"""A module's ``configure_optimizers`` read the way Lightning reads it: one optimizer and its schedulers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
# Lightning's own parser of configure_optimizers' return value (private, but it is the definition of
# what a module may return and of each scheduler's interval / frequency / monitor defaults)
from lightning.pytorch.core.optimizer import (_configure_optimizers, _configure_schedulers_automatic_opt,
                                              _validate_optimizers_attached)
from lightning.pytorch.utilities.types import LRSchedulerConfig


class LocalTrainingError(ValueError, RuntimeError):
    """The user's module cannot be trained by the lean loop (not a per-client failure).

    A ``ValueError`` (the module's set-up is a wrong value, caught at ``fit()`` start where possible)
    and a ``RuntimeError`` (what it was before the fit-start checks existed).
    """


@dataclass
class OptimizerSetup:
    """The optimizer of one client and its schedulers, fresh from ``configure_optimizers``."""

    optimizer: torch.optim.Optimizer
    schedulers: list[LRSchedulerConfig]

    def step_schedulers(self, module: L.LightningModule, interval: str, index: int, plateau: bool,
                        monitored: Callable[[str], float | None]) -> None:
        """Step the schedulers of ``interval`` whose ``frequency`` divides ``index + 1``, as Lightning does.

        ``plateau`` selects the ``ReduceLROnPlateau`` ones (stepped after the epoch-end hooks) or the
        others; ``monitored(name)`` is the value a plateau scheduler watches (``None``: not logged).
        """
        for config in self.schedulers:
            if config.reduce_on_plateau != plateau or config.interval != interval:
                continue
            if (index + 1) % config.frequency:
                continue
            value = None
            if config.reduce_on_plateau:
                value = monitored(config.monitor)
                if value is None:
                    if config.strict:
                        raise LocalTrainingError(
                            f"{type(module).__name__}: ReduceLROnPlateau monitors {config.monitor!r}, which "
                            "training_step does not self.log; log it there or set 'strict': False")
                    continue
            module.lr_scheduler_step(config.scheduler, value)


def build_optimizer_setup(module: L.LightningModule, lr: float | None = None) -> OptimizerSetup:
    """Call ``configure_optimizers`` (fresh for every client), parse it as Lightning does, force ``lr`` if given.

    Raises :class:`LocalTrainingError` naming the problem for what the lean loop cannot apply: no
    optimizer, several optimizers (use ``engine="lightning"``), a ``ReduceLROnPlateau`` without a
    monitored value, or a malformed scheduler configuration.
    """
    name = type(module).__name__
    try:
        config = module.configure_optimizers()
    except Exception as exc:  # e.g. it reads self.trainer, which the lean loop does not have
        raise LocalTrainingError(f"{name}.configure_optimizers() failed outside a lightning.Trainer "
                                 f"({type(exc).__name__}: {exc}); if it needs self.trainer, use "
                                 "engine=\"lightning\"") from exc
    try:
        optimizers, schedulers, monitor = _configure_optimizers(config)
        configs = _configure_schedulers_automatic_opt(schedulers, monitor)
        _validate_optimizers_attached(optimizers, configs)
    except MisconfigurationException as exc:
        raise LocalTrainingError(f"{name}.configure_optimizers() cannot apply: {exc}") from None
    if not optimizers or not isinstance(optimizers[0], torch.optim.Optimizer):
        raise LocalTrainingError(f"{name}.configure_optimizers() must return a torch optimizer (or a list / dict "
                                 f"holding one), got {type(config).__name__}")
    if len(optimizers) > 1:
        raise LocalTrainingError(f"{name}.configure_optimizers() returns {len(optimizers)} optimizers; the lean "
                                 "loop trains with one. Use engine=\"lightning\" (with manual optimization) "
                                 "for several")
    optimizer = optimizers[0]
    if lr is not None:
        _force_lr(optimizer, configs, lr)
    return OptimizerSetup(optimizer, configs)


def _force_lr(optimizer: torch.optim.Optimizer, configs: list[LRSchedulerConfig], lr: float) -> None:
    """An attack's learning rate: every param group and every scheduler's base start from ``lr``."""
    for group in optimizer.param_groups:
        group["lr"] = lr
        if "initial_lr" in group:
            group["initial_lr"] = lr
    for config in configs:
        if hasattr(config.scheduler, "base_lrs"):
            config.scheduler.base_lrs = [lr] * len(config.scheduler.base_lrs)


__all__ = ["LocalTrainingError", "OptimizerSetup", "build_optimizer_setup"]


