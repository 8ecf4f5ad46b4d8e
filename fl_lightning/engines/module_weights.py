"""Bind a module's tensors to the flat layout: load the global weights in, flatten a trained client out."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from fl_lightning.param_layout import ParamLayout, flatten_into, load_flat_, module_tensors


class ModuleWeights:
    """The live tensors of ``module`` in ``layout`` order: parameters, float buffers and integer buffers.

    Every engine trains a client the same way around these three calls: :meth:`load` the global
    weights, train, :meth:`write` the client's row of the output matrices.
    """

    def __init__(self, module: nn.Module, layout: ParamLayout) -> None:
        self.layout = layout
        self.params = module_tensors(module, layout.params, "params")
        self.buffers = module_tensors(module, layout.buffers, "buffers")
        named = dict(module.named_buffers())
        self.int_buffers = [named[name] for name in layout.int_buffers]

    def int_snapshot(self) -> list[Tensor]:
        """Copies of the integer buffers (``num_batches_tracked``), which the flat vectors do not hold."""
        return [b.clone() for b in self.int_buffers]

    @torch.no_grad()
    def load(self, params: Tensor, buffers: Tensor, int_buffers: list[Tensor] | None = None) -> None:
        """Write the flat global ``params`` / ``buffers`` (and integer buffers, if given) into the module."""
        load_flat_(self.params, params)
        load_flat_(self.buffers, buffers)
        for live, saved in zip(self.int_buffers, int_buffers or []):
            live.copy_(saved)

    def write(self, out_params: Tensor, out_buffers: Tensor) -> None:
        """Flatten the module's current parameters and float buffers into one row of each output."""
        flatten_into(self.params, out_params)
        flatten_into(self.buffers, out_buffers)
