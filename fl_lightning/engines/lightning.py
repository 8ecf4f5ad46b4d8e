"""An engine that trains every client with a real ``lightning.Trainer``, for modules that need all of Lightning."""
from __future__ import annotations

import contextlib
import inspect
import logging
import math
import warnings
from typing import Any, Iterator, Sequence

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from fl_lightning.checks import check_choice, check_instance, check_int, check_optional_int, check_positive, \
    did_you_mean
from fl_lightning.context import BatchPoisoner
from fl_lightning.engines.base import ClientOutcome, ClientTask, Engine, torch_threads
from fl_lightning.engines.batches import epoch_batches, local_passes
from fl_lightning.engines.local_training import LocalResult, poison_batch
from fl_lightning.engines.module_weights import ModuleWeights, train_one_by_one
from fl_lightning.engines.optimizer_state import load_optimizer_states, save_optimizer_states
from fl_lightning.engines.proximal import ProximalTerm, proximal_term
from fl_lightning.engines.train_options import ScheduleState, TrainOptions, seeded_rng
from fl_lightning.module_contract import LoggedValues
from fl_lightning.param_layout import ParamLayout

_OWNER = "LightningEngine"
ACCELERATORS = ("cpu", "auto", "gpu", "cuda", "mps")
#: precisions that keep float32 weights, so the flat ``[N]`` layout of the module is unchanged
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed")
#: ``lightning.Trainer`` arguments the engine sets itself (from its own arguments or the round's task)
_ENGINE_SET = {
    "max_epochs": "the task's epochs (FederatedTrainer(local_epochs=...) or an attack)",
    "max_steps": "the task's steps (FederatedTrainer(local_steps=...) or an attack)",
    "limit_train_batches": "FederatedTrainer(max_batches_per_epoch=...)",
    "accelerator": "LightningEngine(accelerator=...)",
    "devices": "one device per client, always",
    "precision": "LightningEngine(precision=...)",
    "gradient_clip_val": "FederatedTrainer(gradient_clip_val=...)",
    "gradient_clip_algorithm": "FederatedTrainer(gradient_clip_algorithm=...)",
    "accumulate_grad_batches": "FederatedTrainer(accumulate_grad_batches=...)",
    "deterministic": "FederatedTrainer(deterministic=...)",
    "logger": "FederatedTrainer(logger=...): the federated run logs, not each client's Trainer",
    "enable_checkpointing": "the federated checkpoints (FederatedTrainer(checkpoint_every=...))",
    "enable_progress_bar": "FederatedTrainer(enable_progress_bar=...)",
    "enable_model_summary": "nothing: a summary per client would print once per client",
    "use_distributed_sampler": "the engine's own batch order, identical to the sequential engine's",
}
#: per-``Trainer`` messages that would print once per client and say nothing about the federated run
_QUIET_WARNINGS = (
    r".*does not have many workers.*",
    r".*is smaller than the logging interval.*",
    r".*but have no logger configured.*",
    r".*GPU available but not used.*",
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",  # torch deprecation inside Lightning's batch handling
)
_LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")


class LightningEngine(Engine):
    """Trains each client with a fresh ``lightning.Trainer`` on the client's own ``DataLoader``.

    Everything a module relies on in Lightning works here: schedulers and their intervals, every
    training hook, ``self.log``, gradient clipping, gradient accumulation, mixed precision and
    manual optimisation. With the same seed and the features the lean loop has (one optimizer, no
    scheduler, ``precision="32-true"``) the trained clients equal the
    :class:`~fl_lightning.engines.SequentialEngine`'s within float tolerance: the batches come in
    the same order, poisoned with the same generator, and the global RNG is seeded the same way.
    It is slower per client (a Trainer, a DataLoader and their hooks per client; see BENCHMARKS.md),
    so the lean engine stays the default.

    Like ``Trainer.fit``, every client runs the module's ``setup("fit")`` and ``prepare_data`` hooks.

    Args:
        accelerator: Lightning's accelerator name (``"cpu"``, ``"auto"``, ``"gpu"``, ``"cuda"``, ``"mps"``).
        precision: ``"32-true"``, ``"16-mixed"`` or ``"bf16-mixed"`` (weights stay float32).
        gradient_clip_val: clip gradients to this norm (``None``: no clipping).
        accumulate_grad_batches: batches whose gradients are summed before each optimizer step.
        num_threads: torch's intra-op threads while clients train (``None``: unchanged).
        trainer_kwargs: more ``lightning.Trainer`` arguments (``callbacks``, ``max_steps``, ...),
            except those the engine sets itself.
    """

    def __init__(self, accelerator: str = "cpu", precision: str = "32-true",
                 gradient_clip_val: float | None = None, accumulate_grad_batches: int = 1,
                 num_threads: int | None = None, trainer_kwargs: dict[str, Any] | None = None) -> None:
        self.accelerator = check_choice(accelerator, ACCELERATORS, "accelerator", _OWNER)
        self.precision = check_choice(precision, PRECISIONS, "precision", _OWNER)
        self.gradient_clip_val = (None if gradient_clip_val is None
                                  else check_positive(gradient_clip_val, "gradient_clip_val", _OWNER))
        self.accumulate_grad_batches = check_int(accumulate_grad_batches, "accumulate_grad_batches", _OWNER,
                                                 minimum=1)
        self.num_threads = check_optional_int(num_threads, "num_threads", _OWNER, minimum=1)
        self.trainer_kwargs = _checked_trainer_kwargs(trainer_kwargs)

    def configure(self, options: TrainOptions) -> None:
        """Take the run's clipping and accumulation (the engine's own arguments, where set, must agree)."""
        super().configure(options)
        for name, default in (("gradient_clip_val", None), ("accumulate_grad_batches", 1)):
            own, run = getattr(self, name), getattr(options, name)
            if own != default and run != default and own != run:
                raise ValueError(f"{_OWNER}: {name}={own} differs from FederatedTrainer({name}={run}); set it in "
                                 "one place (FederatedTrainer's applies to every engine)")
        self._clip_val = options.gradient_clip_val if options.gradient_clip_val is not None else self.gradient_clip_val
        self._clip_algorithm = options.gradient_clip_algorithm
        self._accumulate = (options.accumulate_grad_batches if options.accumulate_grad_batches != 1
                            else self.accumulate_grad_batches)

    def setup(self, module: L.LightningModule, layout: ParamLayout) -> None:
        """Bind the module and check, before any round, that Lightning accepts these settings for it."""
        super().setup(module, layout)
        if not hasattr(self, "_clip_val"):
            self.configure(self.options)
        self._weights = ModuleWeights(module, layout)
        if not module.automatic_optimization:
            if self._clip_val is not None:
                raise ValueError(f"{_OWNER}: gradient_clip_val needs automatic optimization, but "
                                 f"{type(module).__name__} sets automatic_optimization = False; clip in "
                                 "training_step with self.clip_gradients(...) and leave gradient_clip_val=None")
            if self._accumulate != 1:
                raise ValueError(f"{_OWNER}: accumulate_grad_batches needs automatic optimization, but "
                                 f"{type(module).__name__} sets automatic_optimization = False; accumulate "
                                 "in training_step and leave accumulate_grad_batches=1")
        try:
            with _quiet_lightning(), _entry_points_read_once():
                self._trainer(epochs=1, max_batches=None, callback=_ClientCallback(None, 1, None))
        except MisconfigurationException as exc:  # e.g. accelerator="cuda" on a machine without one
            raise ValueError(f"{_OWNER}: lightning.Trainer refuses these settings: {exc}") from exc

    def train_round(self, global_params: Tensor, global_buffers: Tensor, tasks: Sequence[ClientTask],
                    out_params: Tensor, out_buffers: Tensor) -> list[ClientOutcome]:
        """Train each task in turn with its own Trainer; an exception in one client drops that client only."""
        # one quiet block for the whole round: entering catch_warnings resets Python's once-per-place
        # warning registry, so per client it would repeat the module's own warnings for every client
        with torch_threads(self.num_threads), _quiet_lightning(), _entry_points_read_once():
            return self._train_all(global_params, global_buffers, tasks, out_params, out_buffers)

    def _train_all(self, global_params: Tensor, global_buffers: Tensor, tasks: Sequence[ClientTask],
                   out_params: Tensor, out_buffers: Tensor) -> list[ClientOutcome]:
        # a MisconfigurationException means the module or the settings cannot work for any client
        return train_one_by_one(self._weights, global_params, global_buffers, tasks, out_params, out_buffers,
                                train=self._train_client, fatal=(MisconfigurationException,))

    def _train_client(self, task: ClientTask) -> LocalResult:
        """Fit one client with its own Trainer; returns its mean training loss and the means of what it logged."""
        cfg = task.config
        generator = torch.Generator().manual_seed(task.seed)
        loader = _client_loader(task, generator)
        schedule = task.schedule if cfg.lr is None else None  # an attacker's own lr restarts the schedule
        callback = _ClientCallback(cfg.lr, self._accumulate, schedule, task)
        if cfg.steps is None:
            trainer = self._trainer(cfg.epochs, cfg.max_batches_per_epoch, callback,
                                    task.options.estimated_stepping_batches)
        else:  # passes over the data until max_steps optimizer steps, as the lean loop
            trainer = self._trainer(local_passes(cfg, len(task.data)), None, callback,
                                    task.options.estimated_stepping_batches, max_steps=cfg.steps)
        device = _module_device(self.module)
        try:
            # as the lean loop: the task seed drives the batch order, the poisoner and the module's own draws,
            # inside a fork of torch's global generator that leaves the user's where it was
            with seeded_rng(task.seed, device):
                trainer.fit(self.module, train_dataloaders=loader)
        finally:
            self.module.trainer = None  # type: ignore[assignment]  # no Trainer outlives its client
            if _module_device(self.module) != device:  # Lightning's teardown moves the module to the CPU
                self.module.to(device)
        return LocalResult(callback.mean_loss(trainer), callback.logged.means(), callback.logged.prog_bar,
                           callback.optimizer_state)

    def _trainer(self, epochs: int, max_batches: int | None, callback: "_ClientCallback",
                 total_steps: float = math.inf, max_steps: int = -1) -> L.Trainer:
        kwargs = dict(self.trainer_kwargs)
        callbacks = [callback, *_as_list(kwargs.pop("callbacks", None))]
        trainer = _ClientTrainer(max_epochs=epochs, max_steps=max_steps, accelerator=self.accelerator, devices=1,
                                 precision=self.precision,
                                 limit_train_batches=1.0 if max_batches is None else max_batches,
                                 gradient_clip_val=self._clip_val,
                                 gradient_clip_algorithm=self._clip_algorithm if self._clip_val is not None else None,
                                 accumulate_grad_batches=self._accumulate, logger=False,
                                 enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                                 use_distributed_sampler=False, callbacks=callbacks, **kwargs)
        trainer.federated_total_steps = total_steps
        return trainer

    def __repr__(self) -> str:
        return (f"LightningEngine(accelerator={self.accelerator!r}, precision={self.precision!r}, "
                f"gradient_clip_val={self.gradient_clip_val}, accumulate_grad_batches={self.accumulate_grad_batches}, "
                f"num_threads={self.num_threads}, trainer_kwargs={self.trainer_kwargs})")


class _ClientTrainer(L.Trainer):
    """A client's Trainer whose ``estimated_stepping_batches`` is the federated run's total, as the module expects."""

    federated_total_steps: float = math.inf

    @property
    def estimated_stepping_batches(self) -> int | float:
        """The run's total optimizer steps (rounds x local epochs x steps per epoch), not this client's."""
        if math.isinf(self.federated_total_steps):
            return super().estimated_stepping_batches
        return int(self.federated_total_steps)


def _checked_trainer_kwargs(trainer_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """``trainer_kwargs`` if every key is a ``lightning.Trainer`` argument the engine leaves to the user."""
    if trainer_kwargs is None:
        return {}
    check_instance(trainer_kwargs, dict, "trainer_kwargs", _OWNER)
    accepted = set(inspect.signature(L.Trainer.__init__).parameters) - {"self"}
    for key in trainer_kwargs:
        if not isinstance(key, str):
            raise TypeError(f"{_OWNER}: trainer_kwargs keys must be str, got {key!r} ({type(key).__name__})")
        if key in _ENGINE_SET:
            raise ValueError(f"{_OWNER}: trainer_kwargs must not set {key!r}; it comes from {_ENGINE_SET[key]}")
        if key not in accepted:
            raise ValueError(f"{_OWNER}: trainer_kwargs has {key!r}, which lightning.Trainer does not take"
                             f"{did_you_mean(key, accepted - set(_ENGINE_SET))}")
    return dict(trainer_kwargs)


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _module_device(module: torch.nn.Module) -> torch.device:
    tensor = next(module.parameters(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


class _EpochOrder(Sampler[Tensor]):
    """Yields one epoch's index batches, drawn from the client's generator when the epoch starts."""

    def __init__(self, num_samples: int, batch_size: int, max_batches: int | None,
                 generator: torch.Generator) -> None:
        self.num_samples, self.batch_size, self.max_batches = num_samples, batch_size, max_batches
        self.generator = generator

    def __iter__(self) -> Iterator[Tensor]:
        # a generator function: nothing is drawn until the epoch asks for its first batch, so
        # Lightning creating an iterator early does not move the generator
        yield from epoch_batches(self.num_samples, self.batch_size, self.max_batches, self.generator)

    def __len__(self) -> int:
        batches = math.ceil(self.num_samples / self.batch_size) if self.num_samples else 0
        return batches if self.max_batches is None else min(batches, self.max_batches)


class _ClientBatches(Dataset):
    """Indexed by a batch's sample indices: the client's batch, poisoned as the attack asks."""

    def __init__(self, data: Any, poisoner: BatchPoisoner | None, generator: torch.Generator) -> None:
        self.data, self.poisoner, self.generator = data, poisoner, generator

    def __getitem__(self, index: Tensor) -> Any:
        batch = next(iter(self.data.batches([index])))
        if self.poisoner is not None:
            batch = poison_batch(self.poisoner, batch, self.generator)
        return batch

    def __len__(self) -> int:
        return len(self.data)


def _client_loader(task: ClientTask, generator: torch.Generator) -> DataLoader:
    """The client's DataLoader: the sequential engine's batch order and poisoning, from one generator."""
    n = len(task.data)
    cap = task.config.max_batches_per_epoch if task.config.steps is None else None  # steps: whole passes
    sampler = _EpochOrder(n, task.config.batch_size or n, cap, generator)
    # the loader's own generator only seeds its (unused) workers; without it each epoch would draw
    # that seed from torch's global RNG and shift the module's dropout masks
    return DataLoader(_ClientBatches(task.data, task.batch_poisoner, generator), sampler=sampler,
                      batch_size=None, num_workers=0, generator=torch.Generator().manual_seed(task.seed))


class _ClientCallback(L.Callback):
    """Forces the task's learning rate once the optimizers exist, and records each step's loss."""

    def __init__(self, lr: float | None, accumulate_grad_batches: int, schedule: ScheduleState | None,
                 task: ClientTask | None = None) -> None:
        self.lr, self.accumulate, self.schedule = lr, accumulate_grad_batches, schedule
        self.losses: list[float] = []
        self.logged = LoggedValues()
        self._step_names: set[str] = set()
        self.task = task
        self.proximal: ProximalTerm | None = None
        #: the optimizers' state at the end of training, when the task keeps it
        self.optimizer_state: list | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Start the schedulers where the run's schedule stands (or apply the attacker's learning rate), then
        give the optimizers the client's kept state and anchor FedProx's term."""
        if self.schedule is not None and pl_module.automatic_optimization:
            _continue_schedule(trainer, self.schedule)
        self._force_lr(trainer)
        task = self.task
        if task is not None and task.optimizer_state is not None:
            load_optimizer_states(trainer.optimizers, task.optimizer_state, task.client_id)
        if task is not None:
            self.proximal = proximal_term(pl_module, task.proximal_mu)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        """FedProx: add ``mu (w - w_global)`` to the (unscaled) gradients the step is about to take."""
        if self.proximal is not None:
            self.proximal.add_to_grads()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Keep the optimizers' state for the client's next round, when asked."""
        if self.task is not None and self.task.keep_optimizer_state:
            self.optimizer_state = save_optimizer_states(trainer.optimizers)

    def _force_lr(self, trainer: L.Trainer) -> None:
        """Apply the attacker's learning rate to every optimizer and the base of every scheduler."""
        if self.lr is None:
            return
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = self.lr
                if "initial_lr" in group:
                    group["initial_lr"] = self.lr
        for config in trainer.lr_scheduler_configs:
            if hasattr(config.scheduler, "base_lrs"):
                config.scheduler.base_lrs = [self.lr] * len(config.scheduler.base_lrs)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Past the nominal round (an attacker's extra epochs) the run's schedule stays where the round ends."""
        if self.schedule is not None and trainer.current_epoch >= self.schedule.epochs:
            trainer.strategy.lr_scheduler_configs = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        """Keep the step's loss (Lightning divides it by the accumulation count; undone here)."""
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, Tensor) and loss.numel() == 1:
            scale = self.accumulate if pl_module.automatic_optimization else 1
            self.losses.append(float(loss.detach()) * scale)
        # what the step self.logged, as the lean loop collects it: each name's value at every step
        metrics = trainer.callback_metrics
        for name, value in metrics.items():
            twin = name.rsplit("_", 1)[0] if name.endswith(("_step", "_epoch")) else None
            if twin not in metrics and isinstance(value, Tensor) and value.numel() == 1:
                self.logged.add(name, value)
                self._step_names.add(name)
        for name in trainer.progress_bar_metrics:  # logged with prog_bar=True
            self.logged.prog_bar.add(name.rsplit("_", 1)[0] if name.endswith(("_step", "_epoch")) else name)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """What the module logged for the epoch only (``on_step=False``): its epoch value, once per epoch."""
        for name, value in trainer.callback_metrics.items():
            if name not in self._step_names and not name.endswith("_epoch") and isinstance(value, Tensor) \
                    and value.numel() == 1:
                self.logged.add(name, value)

    def mean_loss(self, trainer: L.Trainer) -> float:
        """The mean step loss, else a loss the module logged, else NaN."""
        if self.losses:
            return sum(self.losses) / len(self.losses)
        logged = trainer.callback_metrics
        for name in sorted(logged, key=lambda key: (key.split("/")[-1] not in ("loss", "train_loss"), key)):
            if name.endswith("loss") and logged[name].numel() == 1:
                return float(logged[name])
        return math.nan


def _continue_schedule(trainer: L.Trainer, schedule: ScheduleState) -> None:
    """The client's fresh schedulers take the run's state; plateau ones are left to the round's end."""
    configs = trainer.lr_scheduler_configs
    if len(configs) != len(schedule.schedulers):
        raise MisconfigurationException(f"configure_optimizers() returned {len(configs)} schedulers, but the run's "
                                        f"schedule holds {len(schedule.schedulers)}; it must return the same ones "
                                        "every time")
    for config, saved in zip(configs, schedule.schedulers):
        config.scheduler.load_state_dict(saved)
    for group, saved in zip(trainer.optimizers[0].param_groups, schedule.groups):
        group.update(saved)
    trainer.strategy.lr_scheduler_configs = [c for c in configs if not c.reduce_on_plateau]


@contextlib.contextmanager
def _entry_points_read_once() -> Iterator[None]:
    """Within the block, Lightning reads the installed packages' entry points once instead of once per Trainer.

    Every ``Trainer()`` looks up callback factories registered by installed packages; the lookup
    scans every installed distribution's metadata (~30 ms per client here, most of the engine's
    overhead). Packages do not change during a round, so the lookup is answered from one scan;
    the factories themselves are still called per Trainer, so each client gets fresh callbacks.
    """
    from lightning.fabric.utilities import registry

    original = getattr(registry, "entry_points", None)
    if original is None:  # another Lightning version: nothing to shorten
        yield
        return
    found: dict[Any, Any] = {}

    def entry_points(**selection: Any) -> Any:
        key = tuple(sorted(selection.items()))
        if key not in found:
            found[key] = original(**selection)
        return found[key]

    registry.entry_points = entry_points
    try:
        yield
    finally:
        registry.entry_points = original


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Hide what every client's Trainer would print (device summary, 'fit stopped', data-loader hints)."""
    loggers = [logging.getLogger(name) for name in _LIGHTNING_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.level, logging.WARNING))  # quieter, never louder than the user set it
    try:
        with warnings.catch_warnings():
            for pattern in _QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message=pattern)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
