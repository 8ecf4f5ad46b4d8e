"""A module's ``configure_optimizers`` read the way Lightning reads it: one optimizer and its schedulers."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
# Lightning's own parser of configure_optimizers' return value (private, but it is the definition of
# what a module may return and of each scheduler's interval / frequency / monitor defaults)
from lightning.pytorch.core.optimizer import (_configure_optimizers, _configure_schedulers_automatic_opt,
                                              _configure_schedulers_manual_opt, _validate_optimizers_attached)
from lightning.pytorch.utilities.types import LRSchedulerConfig

from fl_lightning.engines.lean_trainer import LeanTrainer, attached
from fl_lightning.engines.train_options import ScheduleState, TrainOptions


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
    #: every optimizer (several only under manual optimization); ``optimizer`` is the first
    optimizers: list[torch.optim.Optimizer] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.optimizers:
            self.optimizers = [self.optimizer]

    def run_state(self, epoch: int = 0, steps: int = 0, epochs: int = 0) -> ScheduleState:
        """Where the schedulers stand now, for the clients of a round to start from."""
        return ScheduleState([config.scheduler.state_dict() for config in self.schedulers],
                             [_group_hparams(group) for group in self.optimizer.param_groups], epoch, steps, epochs)

    def load_run_state(self, state: ScheduleState) -> None:
        """Start these fresh schedulers (and the optimizer's scheduled hyper-parameters) where the run stands."""
        if len(state.schedulers) != len(self.schedulers):
            raise LocalTrainingError(f"configure_optimizers() returned {len(self.schedulers)} schedulers, but the "
                                     f"run's schedule holds {len(state.schedulers)}; it must return the same "
                                     "schedulers every time it is called")
        for config, saved in zip(self.schedulers, state.schedulers):
            config.scheduler.load_state_dict(saved)
        for group, saved in zip(self.optimizer.param_groups, state.groups):
            group.update(saved)

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


def _group_hparams(group: dict[str, Any]) -> dict[str, Any]:
    """A param group's scalar hyper-parameters (what schedulers change), without its parameters."""
    return {key: value for key, value in group.items()
            if key != "params" and isinstance(value, (int, float, bool, tuple, type(None)))}


def build_optimizer_setup(module: L.LightningModule, lr: float | None = None,
                          options: TrainOptions | None = None) -> OptimizerSetup:
    """Call ``configure_optimizers`` (fresh for every client), parse it as Lightning does, force ``lr`` if given.

    Raises :class:`LocalTrainingError` naming the problem for what the lean loop cannot apply: no
    optimizer, several optimizers under automatic optimization (use manual optimization), a
    ``ReduceLROnPlateau`` without a monitored value, or a malformed scheduler configuration.
    """
    manual = not module.automatic_optimization
    name = type(module).__name__
    try:
        if module._trainer is None:  # outside a client's loop: self.trainer as the run's options describe it
            with attached(module, LeanTrainer(module, options or TrainOptions(), 1)):
                config = module.configure_optimizers()
        else:
            config = module.configure_optimizers()
    except Exception as exc:  # e.g. it reads self.trainer, which the lean loop does not have
        raise LocalTrainingError(f"{name}.configure_optimizers() failed outside a lightning.Trainer "
                                 f"({type(exc).__name__}: {exc}); if it needs self.trainer, use "
                                 "engine=\"lightning\"") from exc
    try:
        optimizers, schedulers, monitor = _configure_optimizers(config)
        configs = (_configure_schedulers_manual_opt(schedulers) if manual
                   else _configure_schedulers_automatic_opt(schedulers, monitor))
        _validate_optimizers_attached(optimizers, configs)
    except MisconfigurationException as exc:
        raise LocalTrainingError(f"{name}.configure_optimizers() cannot apply: {exc}") from None
    if not optimizers or not isinstance(optimizers[0], torch.optim.Optimizer):
        raise LocalTrainingError(f"{name}.configure_optimizers() must return a torch optimizer (or a list / dict "
                                 f"holding one), got {type(config).__name__}")
    if len(optimizers) > 1 and not manual:
        raise LocalTrainingError(f"{name}.configure_optimizers() returns {len(optimizers)} optimizers; automatic "
                                 "optimization trains with one. Set automatic_optimization = False and step them "
                                 "in training_step (self.optimizers(), self.manual_backward)")
    if lr is not None:
        for optimizer in optimizers:
            _force_lr(optimizer, configs, lr)
    return OptimizerSetup(optimizers[0], configs, list(optimizers))


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


