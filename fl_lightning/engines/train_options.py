"""Lightning ``Trainer`` arguments that shape every client's local training, and where the run's schedule stands."""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

#: ``gradient_clip_algorithm`` values, as ``lightning.Trainer`` names them
CLIP_ALGORITHMS = ("norm", "value")


@dataclass(frozen=True)
class TrainOptions:
    """What ``FederatedTrainer`` passes to each client's loop besides its :class:`~fl_lightning.context.LocalConfig`.

    The names and meanings are ``lightning.Trainer``'s; ``estimated_stepping_batches`` is the
    federated run's total of optimizer steps (``self.trainer.estimated_stepping_batches``).
    """

    gradient_clip_val: float | None = None
    gradient_clip_algorithm: str = "norm"
    accumulate_grad_batches: int = 1
    estimated_stepping_batches: float = math.inf


@dataclass
class ScheduleState:
    """The run's learning-rate schedulers where a round starts: each client's fresh schedulers start here.

    ``schedulers`` holds each scheduler's ``state_dict()`` (in ``configure_optimizers`` order),
    ``groups`` the optimizer's param-group hyper-parameters the schedulers set (``lr``, ``momentum``, ...),
    ``epoch`` the run's epoch index at the round's first local epoch, and ``steps`` / ``epochs`` how far
    a client's schedulers may advance in one round (the nominal round; an attacker's extra work runs
    at the lr where the round's schedule ends).
    """

    schedulers: list[dict[str, Any]]
    groups: list[dict[str, Any]] = field(default_factory=list)
    epoch: int = 0
    steps: int = 0
    epochs: int = 0


@contextlib.contextmanager
def seeded_rng(seed: int, device: torch.device) -> Iterator[None]:
    """torch's global generator seeded with ``seed`` inside the block and put back as it was afterwards.

    Dropout and any other global-RNG draw of the module then depends on the client's seed alone,
    while the user's own generator is left exactly where it was (Lightning's ``isolate_rng``).
    """
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(seed)  # the CPU generator alone: no lazy CUDA initialisation
        if devices:
            torch.cuda.manual_seed(seed)
        yield
