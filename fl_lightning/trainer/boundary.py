"""Checks at the round loop's edges: plug-in lists, data set-up, unusable client updates, the aggregator's output."""
from __future__ import annotations

import inspect
import warnings
from typing import Any, Sequence

import torch
from torch import Tensor

from fl_lightning.aggregators.base import AggregationResult
from fl_lightning.data.datamodule import FederatedDataModule
from fl_lightning.engines.base import ClientOutcome


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


def dropped_clients(outcomes: list[ClientOutcome], finite: Tensor) -> dict[int, str]:
    """Clients whose training failed or whose update holds NaN or Inf (``finite``: the round's one scan)."""
    dropped = {o.client_id: o.error for o in outcomes if not o.ok}
    for row, outcome in enumerate(outcomes):
        if outcome.ok and not bool(finite[row]):
            dropped[outcome.client_id] = "non-finite update (NaN or Inf)"
            warnings.warn(f"client {outcome.client_id} sent a non-finite update and is dropped this round",
                          RuntimeWarning, stacklevel=3)
    return dropped


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
