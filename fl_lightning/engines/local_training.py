"""One client's local training on a plain ``LightningModule``, without a ``lightning.Trainer``.

The loop keeps the parts of Lightning's contract a module relies on: the optimizer and schedulers of
``configure_optimizers`` (fresh per client, stepped at Lightning's points with its ``interval`` and
``frequency``), the ``on_train_start`` / ``on_train_epoch_start`` / ``on_train_epoch_end`` /
``on_train_end`` hooks, ``self.log`` in ``training_step`` (each name's mean over the client's steps
comes back with the loss), the module's device and mixed precision.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import lightning as L
import torch
from torch import Tensor

from fl_lightning.engines.base import ClientTask
from fl_lightning.engines.batches import local_passes, pass_batches
from fl_lightning.engines.optim_config import LocalTrainingError, OptimizerSetup, build_optimizer_setup
from fl_lightning.engines.precision import autocast, grad_scaler
from fl_lightning.module_contract import LoggedValues, detached_logging

#: the module hooks run around each client's local training, in Lightning's order
TRAIN_HOOKS = ("on_train_start", "on_train_epoch_start", "on_train_epoch_end", "on_train_end")


class LocalResult(float):
    """A client's mean training loss, carrying ``logged``: the mean over its steps of each ``self.log`` name."""

    logged: dict[str, float]

    def __new__(cls, loss: float, logged: dict[str, float] | None = None) -> "LocalResult":
        result = super().__new__(cls, loss)
        result.logged = dict(logged or {})
        return result


def build_optimizer(module: L.LightningModule, lr: float | None) -> torch.optim.Optimizer:
    """The single optimizer of ``configure_optimizers`` (fresh for every client), with ``lr`` forced if given."""
    return build_optimizer_setup(module, lr).optimizer


def check_local_training(module: L.LightningModule) -> OptimizerSetup:
    """At ``fit()`` start: raise :class:`LocalTrainingError` (a ``ValueError``) naming what the lean loop cannot apply."""
    if not module.automatic_optimization:
        raise LocalTrainingError(f"{type(module).__name__} uses manual optimization, which the lean loop does not "
                                 "support; set automatic_optimization = True or use engine=\"lightning\"")
    return build_optimizer_setup(module)


def step_loss(output: Any, module: L.LightningModule) -> Tensor | None:
    """The loss a ``training_step`` returned (a tensor, or a dict with ``"loss"``); ``None``: skip the batch.

    As in Lightning's automatic optimization, a step returning ``None`` trains nothing on its batch
    (no backward, no optimizer step) while the step-interval schedulers still advance.
    """
    if output is None:
        return None
    if isinstance(output, dict):
        output = output.get("loss")
    if not isinstance(output, Tensor):
        raise LocalTrainingError(
            f"{type(module).__name__}.training_step must return the loss tensor (or a dict with 'loss'), "
            f"got {type(output).__name__}")
    return output


def _no_check(hook: str) -> None:
    """No layout guard: nothing to check after ``hook``."""


def _optimizer_step(loss: Tensor, optimizer: torch.optim.Optimizer, scaler: "torch.amp.GradScaler | None") -> None:
    """Backward and step, through the fp16 gradient scaler when there is one."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimizer.step()
        return
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def train_client(module: L.LightningModule, task: ClientTask,
                 guard: Callable[[str], None] | None = None) -> LocalResult:
    """Run ``task`` on ``module`` (already holding the global weights, on its device).

    Returns the mean training loss as a :class:`LocalResult` whose ``logged`` holds the mean of each
    value the module logged over the client's steps. ``guard(hook)``, if given, is called after each
    hook and step (e.g. :meth:`~fl_lightning.engines.module_weights.LayoutGuard.check`, which raises
    when the module's parameters changed).
    """
    check = guard or _no_check
    if not module.automatic_optimization:
        raise LocalTrainingError(f"{type(module).__name__} uses manual optimization, which local "
                                 "training does not support; set automatic_optimization = True")
    cfg = task.config
    data = task.data
    n = len(data)
    device = module.device
    generator = torch.Generator().manual_seed(task.seed)
    # dropout and any other global-RNG use inside the module; the CPU generator alone, since
    # torch.manual_seed also (lazily) seeds every accelerator and costs ~0.5 ms a client
    torch.default_generator.manual_seed(task.seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(task.seed)
    setup = build_optimizer_setup(module, cfg.lr)
    check("configure_optimizers")
    scaler = grad_scaler(device, task.precision)
    module.train()
    total, steps = 0.0, 0
    logged = LoggedValues()
    # a plateau scheduler watches the latest logged value, as Lightning's callback_metrics holds it
    monitored = logged.latest.get
    with detached_logging(module, logged):
        module.on_train_start()
        check("on_train_start")
        for epoch in range(local_passes(cfg, n)):
            module.on_train_epoch_start()
            check("on_train_epoch_start")
            epoch_steps = 0
            # drawn at the start of each epoch: a batch poisoner draws from the same generator in between
            order = pass_batches(n, cfg, generator, steps)
            for batch_idx, (inputs, targets) in enumerate(data.batches(order)):
                if task.batch_poisoner is not None:
                    inputs, targets = task.batch_poisoner(inputs, targets, generator)
                inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
                with autocast(device, task.precision):
                    loss = step_loss(module.training_step((inputs, targets), batch_idx), module)
                check("training_step")
                if loss is not None:  # None: Lightning's "skip this batch"
                    _optimizer_step(loss, setup.optimizer, scaler)
                    total += float(loss.detach())
                    steps += 1
                else:
                    warnings.warn(f"{type(module).__name__}.training_step returned None: the batch is skipped, as "
                                  "Lightning skips it; if that is not on purpose, return the loss", UserWarning,
                                  stacklevel=2)
                epoch_steps += 1
                setup.step_schedulers(module, "step", batch_idx, False, monitored)
                setup.step_schedulers(module, "step", batch_idx, True, monitored)
            # Lightning: other epoch schedulers after the epoch's last batch, then the epoch-end hook,
            # then the plateau ones (they may watch what on_train_epoch_end logs)
            if epoch_steps:
                setup.step_schedulers(module, "epoch", epoch, False, monitored)
            module.on_train_epoch_end()
            check("on_train_epoch_end")
            if epoch_steps:
                setup.step_schedulers(module, "epoch", epoch, True, monitored)
        module.on_train_end()
        check("on_train_end")
    return LocalResult(total / steps if steps else math.nan, logged.means())

