"""The engine plug-in point: how the selected clients of a round are trained."""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import lightning as L
import torch
from torch import Tensor

from fl_lightning.checks import check_int
from fl_lightning.context import BatchPoisoner, LocalConfig
from fl_lightning.data.base import TensorData
from fl_lightning.engines.train_options import ScheduleState, TrainOptions
from fl_lightning.param_layout import ParamLayout


@dataclass
class ClientTask:
    """One client's local training in one round."""

    client_id: int
    data: TensorData
    config: LocalConfig
    seed: int
    batch_poisoner: BatchPoisoner | None = None
    #: Lightning's precision name for the forward / backward (``"32-true"``, ``"bf16-mixed"``, ``"16-mixed"``)
    precision: str = "32-true"
    #: FedProx's mu: ``mu/2 ||w - w_global||^2`` is added to the client's training loss (0: none)
    proximal_mu: float = 0.0
    #: return the local optimizer's state in ``ClientOutcome.extras["optimizer_state"]`` (``keep_optimizer_state``)
    keep_optimizer_state: bool = False
    #: the state the client's optimizer kept from its previous round (``None``: a fresh optimizer)
    optimizer_state: list | None = None
    #: the run's Lightning Trainer arguments (clipping, accumulation, the run's total steps)
    options: TrainOptions = field(default_factory=TrainOptions)
    #: where the run's schedulers stand at this round (``None``: fresh schedulers, as before run schedules)
    schedule: ScheduleState | None = None


@dataclass
class ClientOutcome:
    """How one client's training went; ``error`` is set when the client must be dropped."""

    client_id: int
    num_samples: int
    error: str | None = None
    train_loss: float = float("nan")
    seconds: float = 0.0
    extras: dict = field(default_factory=dict)
    #: the mean over the client's steps of each value its ``training_step`` ``self.log``-ged
    logged: dict[str, float] = field(default_factory=dict)
    #: the names among ``logged`` that were logged with ``prog_bar=True``
    prog_bar: frozenset[str] = frozenset()

    @property
    def ok(self) -> bool:
        """Whether the client produced a usable model."""
        return self.error is None


def train_scalars(outcomes: Sequence[ClientOutcome]) -> dict[str, float]:
    """``train/<name>``: what the clients ``self.log``-ged in ``training_step``, averaged weighted by samples.

    Each client contributes its mean over its own steps; clients that failed, or that did not log a
    name, or logged a non-finite value, are left out of that name's average.
    """
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for outcome in outcomes:
        if not outcome.ok:
            continue
        for name, value in outcome.logged.items():
            if math.isfinite(value):
                sums[name] = sums.get(name, 0.0) + value * outcome.num_samples
                weights[name] = weights.get(name, 0.0) + outcome.num_samples
    return {_train_name(name): sums[name] / weights[name] for name in sums if weights[name] > 0}


def prog_bar_names(outcomes: Sequence[ClientOutcome]) -> set[str]:
    """The ``train/<name>`` keys of what the clients logged with ``prog_bar=True``."""
    return {_train_name(name) for outcome in outcomes if outcome.ok for name in outcome.prog_bar}


def _train_name(name: str) -> str:
    return name if name.startswith("train/") else f"train/{name}"


class Engine:
    """Trains the clients of a round from the global weights and writes their local models.

    :meth:`train_round` writes client ``k``'s trained parameters into ``out_params[k]`` and its
    floating-point buffers into ``out_buffers[k]`` (the layout of :class:`ParamLayout`); a client
    that fails gets an outcome with ``error`` set and its rows are ignored.
    """

    #: whether the engine honours ``ClientTask.keep_optimizer_state`` / ``optimizer_state`` (clients that
    #: keep their optimizer across rounds); the trainer refuses the setting on an engine that does not
    supports_optimizer_state: bool = True

    #: the run's Lightning Trainer arguments; ``FederatedTrainer`` sets them through :meth:`configure`
    options: TrainOptions = TrainOptions()

    def configure(self, options: TrainOptions) -> None:
        """Called before :meth:`setup` with the run's Trainer arguments (the clients' tasks carry them too)."""
        self.options = options

    def setup(self, module: L.LightningModule, layout: ParamLayout) -> None:
        """Called once at ``fit()`` start with the user's module (its state is the initial global model)."""
        self.module = module
        self.layout = layout

    def train_round(self, global_params: Tensor, global_buffers: Tensor, tasks: Sequence[ClientTask],
                    out_params: Tensor, out_buffers: Tensor) -> list[ClientOutcome]:
        """Train every task from the global weights; one outcome per task, in task order."""
        raise NotImplementedError

    def teardown(self) -> None:
        """Release workers or memory at the end of ``fit()``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@contextlib.contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run the block with ``num_threads`` intra-op threads (``None``: leave torch's setting alone).

    Small client models on small batches gain nothing from intra-op threads, and oversubscribed
    cores make them many times slower; the caller's setting is restored afterwards.
    """
    if num_threads is None:
        yield
        return
    check_int(num_threads, "num_threads", "torch_threads", minimum=1)
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
