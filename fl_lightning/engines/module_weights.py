"""Bind a module's tensors to the flat layout: load the global weights in, flatten a trained client out,
and the loop that trains clients one after another on one module around those calls."""
from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, Callable, Sequence

import torch
from torch import Tensor, nn

from fl_lightning.param_layout import ParamLayout, flatten_into, load_flat_, module_tensors

if TYPE_CHECKING:
    from fl_lightning.engines.base import ClientOutcome, ClientTask


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


def train_one_by_one(weights: ModuleWeights, global_params: Tensor, global_buffers: Tensor,
                     tasks: Sequence["ClientTask"], out_params: Tensor, out_buffers: Tensor,
                     train: Callable[["ClientTask"], float], fatal: tuple[type[BaseException], ...]
                     ) -> list["ClientOutcome"]:
    """Train ``tasks`` in turn on one module: load the global weights, ``train``, write the client's rows.

    A client whose training raises is dropped for the round with a warning, unless the exception is
    one of ``fatal`` (the module or the settings cannot work for any client). ``train`` returns the
    client's mean loss; a ``LocalResult`` also carries what the module logged. The module holds the
    global weights again afterwards.
    """
    from fl_lightning.engines.base import ClientOutcome

    int_snapshot = weights.int_snapshot()
    outcomes = []
    for row, task in enumerate(tasks):
        weights.load(global_params, global_buffers, int_snapshot)
        started = time.perf_counter()
        outcome = ClientOutcome(task.client_id, len(task.data))
        try:
            result = train(task)
            outcome.train_loss = float(result)
            outcome.logged = dict(getattr(result, "logged", {}))
            outcome.prog_bar = frozenset(getattr(result, "prog_bar", ()))
        except fatal:
            raise
        except Exception as exc:  # a failing client is dropped for this round, not fatal
            outcome.error = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"client {task.client_id} failed and is dropped this round: {outcome.error}",
                          RuntimeWarning, stacklevel=3)
        else:
            weights.write(out_params[row], out_buffers[row])
        outcome.seconds = time.perf_counter() - started
        outcomes.append(outcome)
    weights.load(global_params, global_buffers, int_snapshot)
    return outcomes
