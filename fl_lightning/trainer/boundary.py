"""Checks at the round loop's edges: plug-in lists, data set-up, unusable client updates, the aggregator's output."""
from __future__ import annotations

import inspect
import math
import warnings
from typing import Any, Sequence

import torch
from torch import Tensor

from fl_lightning.aggregators.base import AggregationResult, Aggregator
from fl_lightning.context import RoundContext
from fl_lightning.data.datamodule import FederatedDataModule
from fl_lightning.engines.base import ClientOutcome
from fl_lightning.tamper import LentTensors, lent_context


def as_list(items: Any, name: str) -> list[Any]:
    """``items`` as a list; a lone plug-in (not in a list) is a ``TypeError`` naming the setting."""
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise TypeError(f"FederatedTrainer: {name} must be a list, got {type(items).__name__}")
    return list(items)


def setup_data(datamodule: FederatedDataModule, root_samples: int) -> None:
    """``datamodule.setup()``, holding out ``root_samples`` training samples as the server's root set if asked."""
    if root_samples == 0:
        datamodule.setup()
        return
    if "root_samples" not in inspect.signature(datamodule.setup).parameters:
        raise TypeError(f"{type(datamodule).__name__}.setup() does not take root_samples, so it cannot hold out "
                        f"the server's root set that the aggregator asks for (root_samples={root_samples})")
    datamodule.setup(root_samples=root_samples)


def input_shape(datamodule: FederatedDataModule) -> tuple[int, ...]:
    """The shape of one input sample: from the datamodule if it says, else from the first client's data."""
    shape = getattr(datamodule, "input_shape", None)
    if shape is not None:
        return tuple(shape)
    first = datamodule.clients[0]
    inputs = getattr(first, "inputs", None)
    if inputs is None:
        inputs, _ = next(iter(first.batches([torch.tensor([0])])))
    return tuple(inputs.shape[1:])


def finite_rows(values: Tensor) -> Tensor:
    """``[K]`` bool: which rows of a ``[K, M]`` matrix hold only finite values (all True when ``M == 0``)."""
    return torch.isfinite(values).all(dim=1)


def dropped_clients(outcomes: list[ClientOutcome], finite: Tensor, buffers_finite: Tensor | None = None
                    ) -> dict[int, str]:
    """Clients whose training failed, whose float buffers (BatchNorm statistics) or update hold NaN or Inf.

    ``finite``: the round's one scan of the updates; ``buffers_finite``: the same for the local buffers.
    """
    dropped = {o.client_id: o.error for o in outcomes if not o.ok}
    for row, outcome in enumerate(outcomes):
        if not outcome.ok:
            continue
        if buffers_finite is not None and not bool(buffers_finite[row]):
            dropped[outcome.client_id] = "non-finite buffers (NaN or Inf, e.g. BatchNorm running statistics)"
            warnings.warn(f"client {outcome.client_id} sent non-finite buffers (NaN or Inf, e.g. BatchNorm "
                          "running statistics) and is dropped this round", RuntimeWarning, stacklevel=3)
        elif not bool(finite[row]):
            dropped[outcome.client_id] = "non-finite update (NaN or Inf)"
            warnings.warn(f"client {outcome.client_id} sent a non-finite update and is dropped this round",
                          RuntimeWarning, stacklevel=3)
    return dropped


def non_finite_state(params: Tensor, buffers: Tensor | None) -> str:
    """What of a would-be global model is not finite: ``"parameters"``, ``"buffers"``, both, or ``""``."""
    bad = [name for name, values in (("parameters", params), ("buffers", buffers))
           if values is not None and not bool(torch.isfinite(values).all())]
    return " and ".join(bad)


def non_finite_metrics(metrics: dict[str, float]) -> list[str]:
    """The names of the round's metrics that are NaN or Inf (a test loss that overflowed, an empty ratio)."""
    return [name for name, value in metrics.items()
            if isinstance(value, (int, float)) and not math.isfinite(value)]


def check_result(result: Any, name: str, k: int, n: int) -> None:
    """The aggregator's output checked at the boundary: the message names the rule and what to return."""
    if not isinstance(result, AggregationResult):
        raise TypeError(f"{name}.aggregate must return an AggregationResult, got {type(result).__name__}")
    if not isinstance(result.update, Tensor) or tuple(result.update.shape) != (n,):
        shape = tuple(result.update.shape) if isinstance(result.update, Tensor) else type(result.update).__name__
        raise ValueError(f"{name}.aggregate returned an update of shape {shape}; expected ({n},), one value "
                         "per model parameter")
    if result.client_weights is not None and tuple(result.client_weights.shape) != (k,):
        raise ValueError(f"{name}.aggregate returned client_weights of shape "
                         f"{tuple(result.client_weights.shape)}; expected ({k},)")


def check_layout_changes(outcomes: list[ClientOutcome], module_name: str) -> None:
    """Stop the fit when every client of the round changed the module's tensors the same way.

    One client whose hook changed the layout is dropped by the engine; the same change in every
    client means the module itself breaks the federated contract, so no round could aggregate.
    """
    changes = [o.extras.get("layout_change") for o in outcomes]
    if not changes or any(c is None for c in changes) or len(set(changes)) != 1:
        return
    hook, difference = changes[0]
    where = f"{module_name}.{hook}" if hook.isidentifier() else f"{module_name}'s {hook}"
    raise RuntimeError(f"{where} changed the model in every client ({difference}); {hook} must not "
                       "add, remove, replace, resize or retype parameters or buffers: build the whole model in "
                       "__init__ (or configure_model) and leave it as it is during training")


def aggregate_checked(aggregator: Aggregator, updates: Tensor, ctx: RoundContext) -> AggregationResult:
    """``aggregator.aggregate(updates, ctx)``, failing, naming the rule, if it wrote in place into what it was lent."""
    lent = LentTensors({"updates": updates, **lent_context(ctx)})
    result = aggregator.aggregate(updates, ctx)
    changed = lent.changed()
    if changed:
        raise RuntimeError(f"{type(aggregator).__name__}.aggregate wrote in place into {', '.join(changed)}; an "
                           "aggregator reads its inputs only: clone a tensor before changing it")
    return result
