"""The global model as flat vectors, kept in step with the user's module; stateful for checkpoints."""
from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from fl_lightning.engines.module_weights import ModuleWeights
from fl_lightning.param_layout import ParamLayout, flatten


class GlobalModel:
    """``params`` ``[N]`` and float ``buffers`` of the global model; the user's module always mirrors them."""

    def __init__(self, module: L.LightningModule, layout: ParamLayout) -> None:
        self.layout = layout
        self.weights = ModuleWeights(module, layout)
        self.params = flatten(self.weights.params)
        self.buffers = flatten(self.weights.buffers)

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
