"""Fang et al. (USENIX Security 2020) full-knowledge local model poisoning, against Krum and Trimmed mean."""
from __future__ import annotations

from typing import Sequence

from torch import Tensor

from fl_lightning.attacks import functional as F
from fl_lightning.attacks.base import Attack, ClientSpec, ModelPoisoningAttack
from fl_lightning.checks import check_number, check_optional_int, check_positive
from fl_lightning.context import RoundContext


class FangKrum(ModelPoisoningAttack):
    """Every attacker sends ``-lambda * sign(honest mean)``, ``lambda`` halved from Fang's bound until Krum picks it.

    ``f`` is the server's Krum parameter the attackers assume (``None``: the number of attackers in
    the round); ``threshold`` the smallest ``lambda`` tried (paper: 1e-5).
    See :func:`~fl_lightning.attacks.functional.fang_krum`.
    """

    def __init__(self, f: int | None = None, threshold: float = 1e-5, clients: ClientSpec | None = None,
                 rounds: Sequence[int] | None = None, of: str | Attack | None = None,
                 extra_epochs: int = 0, lr: float | None = None, batch_size: int | None = None) -> None:
        super().__init__(clients=clients, rounds=rounds, extra_epochs=extra_epochs, lr=lr,
                         batch_size=batch_size, of=of)
        self.f = check_optional_int(f, "f", "FangKrum", minimum=0)
        self.threshold = check_positive(threshold, "threshold", "FangKrum")

    def craft(self, honest: Tensor, own: Tensor, ctx: RoundContext) -> Tensor:
        """:func:`~fl_lightning.attacks.functional.fang_krum`."""
        f = own.shape[0] if self.f is None else self.f
        if honest.shape[0] + own.shape[0] <= 2 * f + 2:      # Krum cannot run: nothing to aim at
            return own
        return F.fang_krum(honest, own.shape[0], f, threshold=self.threshold)


class FangTrimmedMean(ModelPoisoningAttack):
    """Each coordinate just beyond the honest extreme opposite the honest step (Fang et al.'s Trimmed-mean attack).

    Values are drawn uniformly in Fang's intervals with factor ``b`` (paper: 2), from a generator
    seeded by (run seed, round, attack): reproducible and resume-exact. It also targets Median.
    See :func:`~fl_lightning.attacks.functional.fang_trimmed_mean`.
    """

    def __init__(self, b: float = 2.0, clients: ClientSpec | None = None, rounds: Sequence[int] | None = None,
                 of: str | Attack | None = None, extra_epochs: int = 0, lr: float | None = None,
                 batch_size: int | None = None) -> None:
        super().__init__(clients=clients, rounds=rounds, extra_epochs=extra_epochs, lr=lr,
                         batch_size=batch_size, of=of)
        self.b = check_number(b, "b", "FangTrimmedMean", low=1.0, low_inclusive=False)

    def craft(self, honest: Tensor, own: Tensor, ctx: RoundContext) -> Tensor:
        """:func:`~fl_lightning.attacks.functional.fang_trimmed_mean`."""
        return F.fang_trimmed_mean(honest, own.shape[0], b=self.b, generator=self.round_generator(ctx, "fang"))
