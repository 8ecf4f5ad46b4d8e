"""Min-Max and Min-Sum (Shejwalkar & Houmansadr, NDSS 2021): the largest push that still looks like an honest update."""
from __future__ import annotations

from typing import Sequence

from torch import Tensor

from fl_lightning.attacks import functional as F
from fl_lightning.attacks.base import Attack, ClientSpec, ModelPoisoningAttack
from fl_lightning.checks import check_choice, check_positive
from fl_lightning.context import RoundContext


class _ScaledPerturbation(ModelPoisoningAttack):
    """Shared settings of Min-Max and Min-Sum: the perturbation and the scale search."""

    def __init__(self, perturbation: str = "unit", gamma_init: float = 10.0, tol: float = 1e-5,
                 clients: ClientSpec | None = None, rounds: Sequence[int] | None = None,
                 of: str | Attack | None = None, extra_epochs: int = 0, lr: float | None = None,
                 batch_size: int | None = None) -> None:
        super().__init__(clients=clients, rounds=rounds, extra_epochs=extra_epochs, lr=lr,
                         batch_size=batch_size, of=of)
        name = type(self).__name__
        self.perturbation = check_choice(perturbation, F.PERTURBATIONS, "perturbation", name)
        self.gamma_init = check_positive(gamma_init, "gamma_init", name)
        self.tol = check_positive(tol, "tol", name)


class MinMax(_ScaledPerturbation):
    """Every attacker sends ``mean + gamma p``, ``gamma`` as large as keeps its largest distance to an honest row
    within the largest honest pairwise distance (:func:`~fl_lightning.attacks.functional.min_max`).

    ``perturbation``: ``"unit"`` (against the mean's direction), ``"std"`` or ``"sign"``.
    """

    def craft(self, honest: Tensor, own: Tensor, ctx: RoundContext) -> Tensor:
        """:func:`~fl_lightning.attacks.functional.min_max`."""
        return F.min_max(honest, own.shape[0], self.perturbation, gamma_init=self.gamma_init, tol=self.tol)


class MinSum(_ScaledPerturbation):
    """Like :class:`MinMax` with sums of squared distances (:func:`~fl_lightning.attacks.functional.min_sum`)."""

    def craft(self, honest: Tensor, own: Tensor, ctx: RoundContext) -> Tensor:
        """:func:`~fl_lightning.attacks.functional.min_sum`."""
        return F.min_sum(honest, own.shape[0], self.perturbation, gamma_init=self.gamma_init, tol=self.tol)
