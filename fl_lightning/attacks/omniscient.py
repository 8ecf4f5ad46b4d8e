"""Update-crafting attacks from the Byzantine-robustness literature: sign flip, ALIE and IPM.

ALIE and IPM are omniscient: they read the round's other rows, which they treat as honest (an
attack knows only its own clients). Honest rows are never written; every attack returns a copy.
With no other row in a round, ALIE and IPM leave their rows as they are.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from fl_lightning.attacks.base import Attack, ClientSpec, is_number
from fl_lightning.context import RoundContext, SetupContext


def _check_positive(name: str, field: str, value: object) -> None:
    if not (is_number(value) and value > 0):
        raise ValueError(f"{name}: {field} must be a finite number > 0, got {value!r}")


class SignFlip(Attack):
    """Each attacker sends its own update reversed and scaled: ``-scale * U[k]`` (not omniscient)."""

    def __init__(self, scale: float = 1.0, clients: ClientSpec | None = None,
                 rounds: Sequence[int] | range | None = None, of: str | Attack | None = None,
                 extra_epochs: int = 0, lr: float | None = None, batch_size: int | None = None) -> None:
        super().__init__(clients=clients, rounds=rounds, extra_epochs=extra_epochs, lr=lr,
                         batch_size=batch_size, of=of)
        self.scale = scale

    def setup(self, ctx: SetupContext) -> None:
        """Check ``scale``, then draw the attackers."""
        _check_positive("SignFlip", "scale", self.scale)
        super().setup(ctx)

    def poison_updates(self, updates: Tensor, ctx: RoundContext) -> Tensor:
        """A copy of ``updates`` whose attacker rows are ``-scale`` times themselves."""
        out = updates.clone()
        rows = self.attacker_rows(ctx)
        if rows:
            out[rows] = -self.scale * updates[rows]
        return out


class ALIE(Attack):
    """"A little is enough" (Baruch et al. 2019): every attacker sends ``mean - z * std`` of the honest rows.

    ``mean`` and ``std`` (unbiased; 0 with a single honest row) are per coordinate. ``z=None`` takes
    the paper's largest ``z`` that still hides among the honest clients: with ``n`` rows in the
    round and ``f`` of them this attack's, ``s = floor(n/2 + 1) - f`` and ``z = Phi^-1((n - s) / n)``;
    ``s`` is raised to 1 when the attackers are a majority, so ``z`` stays finite.
    """

    def __init__(self, z: float | None = None, clients: ClientSpec | None = None,
                 rounds: Sequence[int] | range | None = None, of: str | Attack | None = None,
                 extra_epochs: int = 0, lr: float | None = None, batch_size: int | None = None) -> None:
        super().__init__(clients=clients, rounds=rounds, extra_epochs=extra_epochs, lr=lr,
                         batch_size=batch_size, of=of)
        self.z = z

    def setup(self, ctx: SetupContext) -> None:
        """Check ``z``, then draw the attackers."""
        if self.z is not None and not (is_number(self.z) and self.z >= 0):
            raise ValueError(f"ALIE: z must be a finite number >= 0 or None (the paper's z), got {self.z!r}")
        super().setup(ctx)

    @staticmethod
    def paper_z(n: int, f: int) -> float:
        """Baruch et al.'s ``z`` for ``n`` clients of which ``f`` are attackers."""
        s = max(math.floor(n / 2 + 1) - f, 1)
        return float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor((n - s) / n, dtype=torch.float64)))

    def poison_updates(self, updates: Tensor, ctx: RoundContext) -> Tensor:
        """A copy of ``updates`` whose attacker rows are all ``mean - z * std`` of the other rows."""
        rows, others = self.attacker_rows(ctx), self.other_rows(ctx)
        out = updates.clone()
        if not rows or not others:
            return out
        honest = updates[others]
        z = self.z if self.z is not None else self.paper_z(updates.shape[0], len(rows))
        std = honest.std(dim=0) if len(others) > 1 else torch.zeros_like(honest[0])
        out[rows] = (honest.mean(dim=0) - z * std).to(updates.dtype)
        return out


class IPM(Attack):
    """Inner-product manipulation (Xie et al. 2020): every attacker sends ``-epsilon`` times the honest mean."""

    def __init__(self, epsilon: float = 0.5, clients: ClientSpec | None = None,
                 rounds: Sequence[int] | range | None = None, of: str | Attack | None = None,
                 extra_epochs: int = 0, lr: float | None = None, batch_size: int | None = None) -> None:
        super().__init__(clients=clients, rounds=rounds, extra_epochs=extra_epochs, lr=lr,
                         batch_size=batch_size, of=of)
        self.epsilon = epsilon

    def setup(self, ctx: SetupContext) -> None:
        """Check ``epsilon``, then draw the attackers."""
        _check_positive("IPM", "epsilon", self.epsilon)
        super().setup(ctx)

    def poison_updates(self, updates: Tensor, ctx: RoundContext) -> Tensor:
        """A copy of ``updates`` whose attacker rows are ``-epsilon * mean`` of the other rows."""
        rows, others = self.attacker_rows(ctx), self.other_rows(ctx)
        out = updates.clone()
        if rows and others:
            out[rows] = -self.epsilon * updates[others].mean(dim=0)
        return out
