"""The global model as flat vectors, kept in step with the user's module; stateful for checkpoints."""
from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from fl_lightning.engines.module_weights import ModuleWeights
from fl_lightning.param_layout import ParamLayout, flatten
from fl_lightning.trainer.boundary import non_finite_state
from fl_lightning.trainer.server_optimizer import ServerOptimizer, ServerOptimizerSpec


class GlobalModel:
    """``params`` ``[N]`` and float ``buffers`` of the global model; the user's module always mirrors them."""

    def __init__(self, module: L.LightningModule, layout: ParamLayout,
                 server_optimizer: ServerOptimizerSpec | None = None) -> None:
        self.layout = layout
        self.weights = ModuleWeights(module, layout)
        self.params = flatten(self.weights.params)
        self.buffers = flatten(self.weights.buffers)
        #: steps the parameters with the aggregate as negative pseudo-gradient (``None``: ``params += update``)
        self.server_optimizer = (ServerOptimizer(server_optimizer, self.params, layout)
                                 if server_optimizer is not None else None)

    def step(self, update: Tensor, buffers: Tensor | None = None) -> str:
        """Step with the round's aggregate ``update`` (and take the averaged ``buffers``); returns ``""``.

        A step that would leave the parameters or buffers non-finite (finite attackers' rows can still
        overflow) is not taken: the model and the server optimizer's state stay as they were and the
        return value names what broke (``"parameters"``, ``"buffers"``).
        """
        if self.server_optimizer is None:
            stepped = self.params + update
            broken = non_finite_state(stepped, buffers)
            if not broken:
                self.replace(stepped, buffers)
            return broken
        snapshot = self.server_optimizer.snapshot()
        self.server_optimizer.step(update)
        broken = non_finite_state(self.params, buffers)
        if broken:
            self.server_optimizer.restore(snapshot)
        else:
            self.replace(self.params, buffers)
        return broken

    def replace(self, params: Tensor, buffers: Tensor | None = None) -> None:
        """Take the stepped ``params`` (and the averaged float ``buffers``), then refresh the module."""
        self.params.copy_(params)
        if buffers is not None:
            self.buffers.copy_(buffers)
        self.weights.load(self.params, self.buffers)

    def state_dict(self) -> dict[str, Any]:
        """Parameters, float buffers and integer buffers (``num_batches_tracked``) by name, as CPU copies.

        On the CPU whatever the run's device, so a checkpoint of a GPU run resumes on a CPU-only machine.
        """
        return {"global_params": self.params.detach().cpu().clone(), "global_buffers": self.buffers.detach().cpu().clone(),
                "int_buffers": {name: b.detach().cpu().clone()
                                for name, b in zip(self.layout.int_buffers, self.weights.int_buffers)}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s values into the vectors and the module."""
        self.params.copy_(state["global_params"])
        self.buffers.copy_(state["global_buffers"])
        ints = [state["int_buffers"][name].to(live.device)
                for name, live in zip(self.layout.int_buffers, self.weights.int_buffers)]
        with torch.no_grad():
            self.weights.load(self.params, self.buffers, ints)
