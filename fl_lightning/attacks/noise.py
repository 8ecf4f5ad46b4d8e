"""Gaussian noise attack (paper Section 4.4, Table 4): corrupted clients multiply their model by noise."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from fl_lightning.attacks import functional as F
from fl_lightning.attacks.base import Attack, ClientSpec
from fl_lightning.checks import check_number
from fl_lightning.context import RoundContext


class GaussianNoise(Attack):
    """Every parameter of an attacker's model is multiplied by an independent draw of ``N(1, sigma^2)``.

    The model of row ``k`` is ``global + U[k]``; the noisy model is ``model * (1 + sigma * z)``
    with ``z ~ N(0, 1)`` per parameter, and the row becomes ``noisy - global`` (the authors' script
    writes ``w + N(0, 1) * (scale / 100) * w``: ``sigma = scale / 100``). The noise of a
    client in a round comes from ``(seed, round, client)`` alone: reproducible and resume-exact.
    """

    def __init__(self, sigma: float = 1.0, clients: ClientSpec | None = None,
                 rounds: Sequence[int] | None = None, of: str | Attack | None = None,
                 extra_epochs: int = 0, lr: float | None = None, batch_size: int | None = None) -> None:
        super().__init__(clients=clients, rounds=rounds, extra_epochs=extra_epochs, lr=lr,
                         batch_size=batch_size, of=of)
        self.sigma = check_number(sigma, "sigma", "GaussianNoise", low=0.0)

    def poison_updates(self, updates: Tensor, ctx: RoundContext) -> Tensor:
        """A copy of ``updates`` whose attacker rows hold ``model * N(1, sigma^2) - global``."""
        out = updates.clone()
        rows = self.attacker_rows(ctx)
        if not rows:
            return out
        noise = torch.stack([torch.randn(updates.shape[1], generator=self.round_generator(ctx, "noise", ctx.client_ids[row]))
                             for row in rows])
        out[rows] = F.gaussian_noise(updates[rows], ctx.global_params, self.sigma, noise)
        return out
