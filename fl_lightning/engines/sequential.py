"""The default engine: clients one after another in this process, on one reusable module."""
from __future__ import annotations

from typing import Sequence

import lightning as L
from torch import Tensor

from fl_lightning.checks import check_optional_int
from fl_lightning.engines.base import ClientOutcome, ClientTask, Engine, torch_threads
from fl_lightning.engines.local_training import LocalTrainingError, check_local_training, train_client
from fl_lightning.engines.module_weights import ModuleWeights, train_one_by_one
from fl_lightning.param_layout import ParamLayout


class SequentialEngine(Engine):
    """Trains clients one at a time on the user's own module, loading the global weights in place.

    No ``lightning.Trainer``, DataLoader or module copy is made per client: the module and a fresh
    optimizer are reset for each client, so nothing leaks from one client to the next.
    ``num_threads`` sets torch's intra-op threads while clients train (``None``: unchanged); 1 is
    usually fastest for the paper's small models.
    """

    num_threads: int | None = None

    def __init__(self, num_threads: int | None = None) -> None:
        self.num_threads = check_optional_int(num_threads, "num_threads", "SequentialEngine", minimum=1)

    def setup(self, module: L.LightningModule, layout: ParamLayout) -> None:
        """Bind the module whose tensors are overwritten for every client; check its optimizer set-up now."""
        super().setup(module, layout)
        check_local_training(module, self.options)
        self.weights = ModuleWeights(module, layout)

    def train_round(self, global_params: Tensor, global_buffers: Tensor, tasks: Sequence[ClientTask],
                    out_params: Tensor, out_buffers: Tensor) -> list[ClientOutcome]:
        """Train each task in turn; an exception in one client drops that client only."""
        with torch_threads(self.num_threads):
            return self._train_all(global_params, global_buffers, tasks, out_params, out_buffers)

    def _train_all(self, global_params: Tensor, global_buffers: Tensor, tasks: Sequence[ClientTask],
                   out_params: Tensor, out_buffers: Tensor) -> list[ClientOutcome]:
        return train_one_by_one(self.weights, global_params, global_buffers, tasks, out_params, out_buffers,
                                train=lambda task: train_client(self.module, task, self.weights.guard.check),
                                fatal=(LocalTrainingError,))

    def __repr__(self) -> str:
        return f"SequentialEngine(num_threads={self.num_threads})"
