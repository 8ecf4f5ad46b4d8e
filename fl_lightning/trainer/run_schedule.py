"""The module's learning-rate schedulers over the whole federated run, as over one ``lightning.Trainer`` fit.

The run keeps one copy of ``configure_optimizers``' schedulers beside the global model. Every round
the clients start their fresh schedulers from it (:class:`~fl_lightning.engines.train_options.ScheduleState`),
and after the round it advances by the optimizer steps and epochs of the round's nominal client (the
largest, as ``estimated_stepping_batches`` counts it), stepped at Lightning's points with each
scheduler's ``interval`` and ``frequency``. A ``ReduceLROnPlateau`` steps once per round on its
``monitor`` read from the round's metrics of the global model. Its state is saved in checkpoints.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Mapping

import lightning as L

from fl_lightning.engines.optim_config import LocalTrainingError, OptimizerSetup, build_optimizer_setup
from fl_lightning.engines.train_options import ScheduleState, TrainOptions

#: ``FederatedTrainer(scheduler_scope=...)``: one schedule over the run, or a fresh one per client and round
SCOPES = ("run", "round")


def steps_per_epoch(num_samples: int, batch_size: int, max_batches: int | None, accumulate: int) -> tuple[int, int]:
    """``(batches, optimizer steps)`` of one local epoch over ``num_samples`` samples."""
    batches = math.ceil(num_samples / batch_size) if num_samples else 0
    if max_batches is not None:
        batches = min(batches, max_batches)
    return batches, math.ceil(batches / accumulate)


class RunSchedule:
    """The run's schedulers (stateful: saved under ``"schedule"`` in checkpoints) and the lr each optimizer has."""

    def __init__(self, module: L.LightningModule, options: TrainOptions, scope: str, local_epochs: int,
                 batches_per_epoch: int) -> None:
        self.module = module
        self.scope = scope
        self.local_epochs = local_epochs
        self.batches = batches_per_epoch
        self.accumulate = options.accumulate_grad_batches if module.automatic_optimization else 1
        # the server's own optimizer is never stepped: it carries the scheduled lr between rounds
        self.setup: OptimizerSetup | None = None
        try:
            self.setup = build_optimizer_setup(module, None, options)
        except LocalTrainingError:
            pass  # what only a real lightning.Trainer can configure: engine="lightning" runs it per client
        self._warned: set[str] = set()

    @property
    def active(self) -> bool:
        """Whether clients continue the run's schedule (``scope="run"``, schedulers, automatic optimization)."""
        return (self.setup is not None and self.scope == "run" and bool(self.setup.schedulers)
                and self.module.automatic_optimization)

    @property
    def steps_per_round(self) -> int:
        """The nominal client's optimizer steps in one round."""
        return self.local_epochs * math.ceil(self.batches / self.accumulate)

    def round_state(self, round_idx: int) -> ScheduleState | None:
        """Where the clients of ``round_idx`` start their schedulers (``None``: fresh ones)."""
        if not self.active:
            return None
        return self.setup.run_state(round_idx * self.local_epochs, self.steps_per_round, self.local_epochs)

    def lrs(self) -> dict[str, float]:
        """``lr-<Optimizer>`` (``/pg<i>`` for several param groups) as ``LearningRateMonitor`` names them."""
        values: dict[str, float] = {}
        seen: dict[str, int] = {}
        for optimizer in self.setup.optimizers if self.setup is not None else []:
            name = f"lr-{type(optimizer).__name__}"
            seen[name] = seen.get(name, 0) + 1
            if seen[name] > 1:
                name = f"{name}-{seen[name] - 1}"
            groups = optimizer.param_groups
            for i, group in enumerate(groups):
                values[name if len(groups) == 1 else f"{name}/pg{i + 1}"] = float(group["lr"])
        return values

    def advance(self, round_idx: int, metrics: Mapping[str, float]) -> None:
        """Step the run's schedulers through round ``round_idx``, as the nominal client stepped its own."""
        if not self.active:
            return
        with warnings.catch_warnings():
            # the server's optimizer never steps (the clients' do): torch's order check does not apply
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
            self._advance(round_idx, metrics)

    def _advance(self, round_idx: int, metrics: Mapping[str, float]) -> None:
        setup, module = self.setup, self.module
        assert setup is not None  # active
        last = self.batches - 1
        for epoch in range(self.local_epochs):
            for step in range(math.ceil(self.batches / self.accumulate)):
                batch_idx = min((step + 1) * self.accumulate - 1, last)
                setup.step_schedulers(module, "step", batch_idx, False, lambda name: None)
            if self.batches:
                setup.step_schedulers(module, "epoch", round_idx * self.local_epochs + epoch, False, lambda name: None)
        for config in setup.schedulers:
            if config.reduce_on_plateau and (round_idx + 1) % config.frequency == 0:
                value = self._monitored(config, metrics, round_idx)
                if value is not None:
                    module.lr_scheduler_step(config.scheduler, value)

    def _monitored(self, config: Any, metrics: Mapping[str, float], round_idx: int) -> float | None:
        """The round's value of a plateau scheduler's ``monitor``: as named, or under ``val/``, ``test/`` or ``train/``.

        ``None`` when the round has none and the scheduler is not ``strict`` (warned once).
        """
        monitor = config.monitor
        for key in (monitor, f"val/{monitor}", f"test/{monitor}", f"train/{monitor}"):
            if key in metrics:
                return float(metrics[key])
        shown = ", ".join(sorted(k for k in metrics if k.split("/")[0] in ("val", "test", "train"))) or "none"
        message = (f"{type(self.module).__name__}: ReduceLROnPlateau monitors {monitor!r}, which round {round_idx} "
                   f"did not report (as {monitor!r}, 'val/{monitor}', 'test/{monitor}' or 'train/{monitor}'); "
                   f"the round's metrics: {shown}")
        if config.strict:
            raise ValueError(f"{message}. Log it in validation_step, test_step or training_step, or set "
                             "'strict': False to skip rounds without it")
        if "monitor" not in self._warned:
            self._warned.add("monitor")
            warnings.warn(f"{message}; the scheduler does not step ('strict': False)", RuntimeWarning, stacklevel=3)
        return None

    def state_dict(self) -> dict[str, Any]:
        """Each scheduler's state and the optimizer's scheduled hyper-parameters."""
        if self.setup is None:
            return {"schedulers": [], "groups": []}
        state = self.setup.run_state()
        return {"schedulers": state.schedulers, "groups": state.groups}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put the schedulers back where :meth:`state_dict` saw them."""
        if self.setup is not None:
            self.setup.load_run_state(ScheduleState(list(state["schedulers"]), list(state["groups"])))
