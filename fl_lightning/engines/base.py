"""The engine plug-in point: how the selected clients of a round are trained."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import lightning as L
import torch
from torch import Tensor

from fl_lightning.context import BatchPoisoner, LocalConfig
from fl_lightning.data.base import TensorData
from fl_lightning.param_layout import ParamLayout


@dataclass
class ClientTask:
    """One client's local training in one round."""

    client_id: int
    data: TensorData
    config: LocalConfig
    seed: int
    batch_poisoner: BatchPoisoner | None = None


@dataclass
class ClientOutcome:
    """How one client's training went; ``error`` is set when the client must be dropped."""

    client_id: int
    num_samples: int
    error: str | None = None
    train_loss: float = float("nan")
    seconds: float = 0.0
    extras: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether the client produced a usable model."""
        return self.error is None


class Engine:
    """Trains the clients of a round from the global weights and writes their local models.

    :meth:`train_round` writes client ``k``'s trained parameters into ``out_params[k]`` and its
    floating-point buffers into ``out_buffers[k]`` (the layout of :class:`ParamLayout`); a client
    that fails gets an outcome with ``error`` set and its rows are ignored.
    """

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
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
