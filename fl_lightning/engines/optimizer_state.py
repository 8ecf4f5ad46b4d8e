"""A client's local optimizer state carried from one round to its next (``keep_optimizer_state``).

Only the per-parameter state (momentum buffers, Adam's moments and step counts) is carried: the
hyper-parameters (``param_groups``) are the round's own, so an attack's learning rate or a scheduler
is never overwritten by last round's. The state travels on the CPU as plain tensors.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor


def save_optimizer_states(optimizers: Sequence[torch.optim.Optimizer]) -> list[dict[int, dict[str, Any]]]:
    """Each optimizer's per-parameter state, its tensors copied to the CPU."""
    return [{index: {name: value.detach().cpu().clone() if isinstance(value, Tensor) else value
                     for name, value in entry.items()}
             for index, entry in optimizer.state_dict()["state"].items()} for optimizer in optimizers]


def load_optimizer_states(optimizers: Sequence[torch.optim.Optimizer], saved: list[dict[int, dict[str, Any]]],
                          client_id: int) -> None:
    """Put ``saved`` (from :func:`save_optimizer_states`) into the freshly built ``optimizers``."""
    if len(saved) != len(optimizers):
        raise ValueError(f"client {client_id}: its kept optimizer state holds {len(saved)} optimizer(s), but "
                         f"configure_optimizers now returns {len(optimizers)}; keep_optimizer_state needs the same "
                         "optimizers every round")
    for optimizer, state in zip(optimizers, saved):
        # copies: torch keeps a same-device tensor as is, and a client that fails mid-round keeps its old state
        copied = {index: {name: value.clone() if isinstance(value, Tensor) else value for name, value in entry.items()}
                  for index, entry in state.items()}
        optimizer.load_state_dict({"state": copied, "param_groups": optimizer.state_dict()["param_groups"]})
