"""One client's local training on a plain ``LightningModule``, without a ``lightning.Trainer``.

The loop keeps the parts of Lightning's contract a module relies on: the optimizer and schedulers of
``configure_optimizers`` (fresh per client, stepped at Lightning's points with its ``interval`` and
``frequency``), the ``on_train_start`` / ``on_train_epoch_start`` / ``on_train_epoch_end`` /
``on_train_end`` hooks, ``self.log`` in ``training_step`` (each name's mean over the client's steps
comes back with the loss), the module's device and mixed precision, gradient clipping and accumulation,
manual optimization (``self.optimizers()``, ``self.manual_backward``), and ``self.trainer`` as far as a
module reads it (:class:`~fl_lightning.engines.lean_trainer.LeanTrainer`). With the run's
:class:`~fl_lightning.engines.train_options.ScheduleState` the schedulers continue the run's schedule
instead of starting afresh.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import lightning as L
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch import Tensor

from fl_lightning.engines.base import ClientTask
from fl_lightning.engines.batches import local_passes, pass_batches
from fl_lightning.engines.lean_trainer import LeanTrainer, attached
from fl_lightning.engines.optim_config import LocalTrainingError, OptimizerSetup, build_optimizer_setup
from fl_lightning.engines.optimizer_state import load_optimizer_states, save_optimizer_states
from fl_lightning.engines.precision import autocast, grad_scaler
from fl_lightning.engines.proximal import proximal_term
from fl_lightning.engines.train_options import TrainOptions, seeded_rng
from fl_lightning.module_contract import LoggedValues, detached_logging, overrides

#: the module hooks run around each client's local training, in Lightning's order
TRAIN_HOOKS = ("on_train_start", "on_train_epoch_start", "on_train_epoch_end", "on_train_end")


class LocalResult(float):
    """A client's mean training loss, carrying ``logged``: the mean over its steps of each ``self.log`` name.

    ``prog_bar`` holds the names logged with ``prog_bar=True``.
    """

    logged: dict[str, float]
    prog_bar: frozenset[str]
    #: the local optimizers' state at the end, when the task asked to keep it (else ``None``)
    optimizer_state: list | None

    def __new__(cls, loss: float, logged: dict[str, float] | None = None,
                prog_bar: set[str] | frozenset[str] = frozenset(),
                optimizer_state: list | None = None) -> "LocalResult":
        result = super().__new__(cls, loss)
        result.logged = dict(logged or {})
        result.prog_bar = frozenset(prog_bar)
        result.optimizer_state = optimizer_state
        return result


def build_optimizer(module: L.LightningModule, lr: float | None,
                    options: TrainOptions | None = None) -> torch.optim.Optimizer:
    """The single optimizer of ``configure_optimizers`` (fresh for every client), with ``lr`` forced if given."""
    return build_optimizer_setup(module, lr, options).optimizer


def check_local_training(module: L.LightningModule, options: TrainOptions | None = None) -> OptimizerSetup:
    """At ``fit()`` start: raise :class:`LocalTrainingError` (a ``ValueError``) naming what the lean loop cannot apply."""
    options = options or TrainOptions()
    if not module.automatic_optimization and options.accumulate_grad_batches != 1:
        raise LocalTrainingError(f"accumulate_grad_batches needs automatic optimization, but {type(module).__name__} "
                                 "sets automatic_optimization = False; accumulate in training_step and leave "
                                 "accumulate_grad_batches=1")
    return build_optimizer_setup(module, None, options)


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


def _backward(loss: Tensor, scaler: "torch.amp.GradScaler | None") -> None:
    """Backward, through the fp16 gradient scaler when there is one."""
    (loss if scaler is None else scaler.scale(loss)).backward()


def _optimizer_step(module: L.LightningModule, optimizer: torch.optim.Optimizer, scaler: "torch.amp.GradScaler | None",
                    options: TrainOptions) -> None:
    """Clip as ``lightning.Trainer`` does (the module's ``configure_gradient_clipping``), then step."""
    if options.gradient_clip_val is not None or overrides(module, "configure_gradient_clipping"):
        if scaler is not None:
            scaler.unscale_(optimizer)
        module.configure_gradient_clipping(optimizer, gradient_clip_val=options.gradient_clip_val,
                                           gradient_clip_algorithm=options.gradient_clip_algorithm)
    if scaler is None:
        optimizer.step()
        return
    scaler.step(optimizer)
    scaler.update()


def poison_batch(poisoner: Any, batch: Any, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """An attack's batch poisoning applied to an ``(inputs, targets)`` batch; any other batch is refused by name."""
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2 and all(isinstance(b, Tensor) for b in batch)):
        raise LocalTrainingError(f"an attack poisons (inputs, targets) batches, but this client's batches are "
                                 f"{type(batch).__name__}s; use attacks that poison updates on such data")
    return poisoner(batch[0], batch[1], generator)


def _manual_loss(output: Any) -> Tensor | None:
    """A manual ``training_step``'s loss, when it returns one (it may return nothing)."""
    if isinstance(output, dict):
        output = output.get("loss")
    return output if isinstance(output, Tensor) and output.numel() == 1 else None


def train_client(module: L.LightningModule, task: ClientTask,
                 guard: Callable[[str], None] | None = None) -> LocalResult:
    """Run ``task`` on ``module`` (already holding the global weights, on its device).

    Returns the mean training loss as a :class:`LocalResult` whose ``logged`` holds the mean of each
    value the module logged over the client's steps. ``guard(hook)``, if given, is called after each
    hook and step (e.g. :meth:`~fl_lightning.engines.module_weights.LayoutGuard.check`, which raises
    when the module's parameters changed). torch's global generator is seeded with the task's seed
    for the client and left as it was afterwards.
    """
    with seeded_rng(task.seed, module.device), \
            attached(module, LeanTrainer(module, task.options, local_passes(task.config, len(task.data)))) as trainer:
        return _train(module, task, trainer, guard or _no_check)


def _train(module: L.LightningModule, task: ClientTask, trainer: LeanTrainer,
           check: Callable[[str], None]) -> LocalResult:
    cfg, options, schedule = task.config, task.options, task.schedule
    data = task.data
    n = len(data)
    device = module.device
    generator = torch.Generator().manual_seed(task.seed)
    automatic = module.automatic_optimization
    setup = build_optimizer_setup(module, cfg.lr)
    check("configure_optimizers")
    if task.optimizer_state is not None:
        load_optimizer_states([setup.optimizer], task.optimizer_state, task.client_id)
    proximal = proximal_term(module, task.proximal_mu)  # anchored now: the module holds the global weights
    if schedule is not None and cfg.lr is None:  # the run's schedule; an attacker's own lr restarts it
        setup.load_run_state(schedule)
    else:
        schedule = None
    # manual optimization steps its own optimizers, which know nothing of a scaler: fp16 runs unscaled there
    scaler = grad_scaler(device, task.precision) if automatic else None
    trainer.bind(setup.optimizers, setup.schedulers, scaler)
    accumulate = options.accumulate_grad_batches if automatic else 1
    schedulers = setup.schedulers if automatic else []  # manual optimization steps its own schedulers
    module.train()
    total, losses, stepped, pending, batches_drawn = 0.0, 0, 0, False, 0
    logged = LoggedValues()
    # a plateau scheduler watches the latest logged value, as Lightning's callback_metrics holds it
    monitored = logged.latest.get
    epoch_offset = schedule.epoch if schedule is not None else 0
    with detached_logging(module, logged):
        module.on_train_start()
        check("on_train_start")
        for epoch in range(local_passes(cfg, n)):
            trainer.current_epoch = epoch_offset + epoch
            # past the nominal round (an attacker's extra epochs) the schedule stays where the round ends
            scheduled = bool(schedulers) and (schedule is None or epoch < schedule.epochs)
            module.on_train_epoch_start()
            check("on_train_epoch_start")
            epoch_steps = 0
            # drawn at the start of each epoch: a batch poisoner draws from the same generator in between
            order = pass_batches(n, cfg, generator, batches_drawn)
            batches_drawn += len(order)
            last = len(order) - 1
            for batch_idx, batch in enumerate(data.batches(order)):
                if task.batch_poisoner is not None:
                    batch = poison_batch(task.batch_poisoner, batch, generator)
                batch = move_data_to_device(batch, device)
                if not automatic:
                    with autocast(device, task.precision):
                        loss = _manual_loss(module.training_step(batch, batch_idx))
                    check("training_step")
                    if loss is not None:
                        total, losses = total + float(loss.detach()), losses + 1
                    epoch_steps += 1
                    continue
                if batch_idx % accumulate == 0:
                    setup.optimizer.zero_grad(set_to_none=True)
                with autocast(device, task.precision):
                    loss = step_loss(module.training_step(batch, batch_idx), module)
                check("training_step")
                if loss is not None and proximal is not None:
                    loss = loss + proximal()
                if loss is not None:  # None: Lightning's "skip this batch"
                    _backward(loss / accumulate if accumulate > 1 else loss, scaler)
                    total, losses, pending = total + float(loss.detach()), losses + 1, True
                else:
                    warnings.warn(f"{type(module).__name__}.training_step returned None: the batch is skipped, as "
                                  "Lightning skips it; if that is not on purpose, return the loss", UserWarning,
                                  stacklevel=2)
                epoch_steps += 1
                if (batch_idx + 1) % accumulate and batch_idx != last:
                    continue  # Lightning: accumulate, stepping at the window's end or the epoch's last batch
                if pending:
                    _optimizer_step(module, setup.optimizer, scaler, options)
                    pending = False
                trainer.global_step += 1
                stepped += 1
                if scheduled and (schedule is None or stepped <= schedule.steps):
                    setup.step_schedulers(module, "step", batch_idx, False, monitored)
                    if schedule is None:  # in the run's schedule, plateau schedulers step once per round
                        setup.step_schedulers(module, "step", batch_idx, True, monitored)
            # Lightning: other epoch schedulers after the epoch's last batch, then the epoch-end hook,
            # then the plateau ones (they may watch what on_train_epoch_end logs)
            if epoch_steps and scheduled:
                setup.step_schedulers(module, "epoch", epoch_offset + epoch, False, monitored)
            module.on_train_epoch_end()
            check("on_train_epoch_end")
            if epoch_steps and scheduled and schedule is None:
                setup.step_schedulers(module, "epoch", epoch, True, monitored)
        module.on_train_end()
        check("on_train_end")
    kept = save_optimizer_states([setup.optimizer]) if task.keep_optimizer_state else None
    if not losses and not automatic:  # a manual step that returns nothing: the loss it logged, if any
        mean = logged.means()
        named = [k for k in mean if k.split("/")[-1] in ("loss", "train_loss")]
        return LocalResult(mean[named[0]] if named else math.nan, mean, logged.prog_bar, kept)
    return LocalResult(total / losses if losses else math.nan, logged.means(), logged.prog_bar, kept)

