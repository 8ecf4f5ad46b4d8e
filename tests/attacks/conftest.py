"""Builders of hand-made setup and round contexts for the attack tests."""
from __future__ import annotations

from typing import Callable, Sequence

import pytest
import torch
from torch import nn

from fl_lightning.context import RoundContext, SetupContext
from fl_lightning.param_layout import ParamLayout

LAYOUT = ParamLayout.from_module(nn.Linear(3, 2))  # N = 8


def setup_context(num_clients: int = 10, rounds: int = 10, seed: int = 0, num_classes: int = 10,
                  input_shape: Sequence[int] = (1, 8, 8), client_targets: list | None = None) -> SetupContext:
    """Clients hold two classes each: client i has classes i % C and (i + 1) % C."""
    if client_targets is None:
        client_targets = [torch.tensor([i % num_classes, (i + 1) % num_classes] * 3)
                          for i in range(num_clients)]
    return SetupContext(num_clients=num_clients, num_rounds=rounds, seed=seed,
                        client_targets=client_targets, num_classes=num_classes,
                        input_shape=tuple(input_shape), layout=LAYOUT)


def round_context(client_ids: Sequence[int], width: int = 8, round_idx: int = 0, seed: int = 0,
                  global_params: torch.Tensor | None = None) -> RoundContext:
    """A round of ``client_ids`` over ``width`` parameters (global parameters 1.0 unless given)."""
    if global_params is None:
        global_params = torch.ones(width)
    return RoundContext(round=round_idx, client_ids=list(client_ids),
                        num_samples=torch.full((len(client_ids),), 10.0), layout=LAYOUT,
                        global_params=global_params, seed=seed, num_clients=max(client_ids) + 1)


@pytest.fixture
def make_setup() -> Callable[..., SetupContext]:
    """``setup_context`` as a fixture."""
    return setup_context


@pytest.fixture
def make_round() -> Callable[..., RoundContext]:
    """``round_context`` as a fixture."""
    return round_context
