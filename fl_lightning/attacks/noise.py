"""Gaussian noise attack (paper Section 4.4, Table 4): corrupted clients multiply their model by noise."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from fl_lightning.attacks.base import Attack, ClientSpec, is_number
from fl_lightning.context import RoundContext, SetupContext


class GaussianNoise(Attack):
    """Every parameter of an attacker's model is multiplied by an independent draw of ``N(1, sigma^2)``.

    The model of row ``k`` is ``global + U[k]``; the noisy model is ``model * (1 + sigma * z)``
    with ``z ~ N(0, 1)`` per parameter, and the row becomes ``noisy - global`` (the authors' script
    writes ``w + N(0, 1) * (scale / 100) * w``: ``sigma = scale / 100``). The noise of a
    client in a round comes from ``(seed, round, client)`` alone: reproducible and resume-exact.
    """

    def __init__(self, sigma: float = 1.0, clients: ClientSpec | None = None,
                 rounds: Sequence[int] | range | None = None, of: str | Attack | None = None,
                 extra_epochs: int = 0, lr: float | None = None, batch_size: int | None = None) -> None:
        super().__init__(clients=clients, rounds=rounds, extra_epochs=extra_epochs, lr=lr,
                         batch_size=batch_size, of=of)
        self.sigma = sigma

    def setup(self, ctx: SetupContext) -> None:
        """Check ``sigma``, then draw the attackers."""
        if not (is_number(self.sigma) and self.sigma >= 0):
            raise ValueError(f"GaussianNoise: sigma must be a finite number >= 0, got {self.sigma!r}")
        super().setup(ctx)

    def poison_updates(self, updates: Tensor, ctx: RoundContext) -> Tensor:
        """A copy of ``updates`` whose attacker rows hold ``model * N(1, sigma^2) - global``."""
        out = updates.clone()
        global_params = ctx.global_params.to(device=updates.device, dtype=updates.dtype)
        for row in self.attacker_rows(ctx):
            z = torch.randn(updates.shape[1], generator=self.round_generator(ctx, "noise", ctx.client_ids[row]))
            model = global_params + updates[row]
            out[row] = updates[row] + self.sigma * model * z.to(device=updates.device, dtype=updates.dtype)
        return out
