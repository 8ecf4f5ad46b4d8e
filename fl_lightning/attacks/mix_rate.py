"""Mix-rate attack (paper Appendix A.7, Table 8): hide an adversarial model inside an honest-looking one."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from fl_lightning.attacks.base import Attack, ClientSpec
from fl_lightning.checks import check_choice, check_fraction
from fl_lightning.context import RoundContext

#: how :class:`MixRate` builds the honest model it blends into
BLEND_WITH = ("residual_reweight", "mean")


class MixRate(Attack):
    """Each parameter of an attacker's row keeps its adversarial value with probability ``rate``, else honest.

    The honest model is the residual-reweighting aggregate of the round's other rows, as in the
    authors' script (``blend_with="mean"``: their mean; fewer than 3 other rows also use the mean);
    ``rate=1`` leaves the attacker as it is, ``rate=0`` makes it the honest aggregate. The
    adversarial model is whatever the attacker trained, so compose it with a data-poisoning attack
    on the same clients (paper: Amazon, 4 label flippers with 2 more epochs at lr 0.1)::

        flip = LabelFlip(source=None, clients=4, extra_epochs=2, lr=0.1)
        attacks = [flip, MixRate(rate=0.1, of=flip)]

    With no other row in the round the attacker rows are left as they are.
    """

    def __init__(self, rate: float = 0.1, clients: ClientSpec | None = None,
                 rounds: Sequence[int] | None = None, of: str | Attack | None = None,
                 blend_with: str = "residual_reweight", extra_epochs: int = 0, lr: float | None = None,
                 batch_size: int | None = None) -> None:
        super().__init__(clients=clients, rounds=rounds, extra_epochs=extra_epochs, lr=lr,
                         batch_size=batch_size, of=of)
        self.rate = check_fraction(rate, "rate", "MixRate")
        self.blend_with = check_choice(blend_with, BLEND_WITH, "blend_with", "MixRate")

    def honest_model(self, honest: Tensor) -> Tensor:
        """The ``[N]`` honest update the attackers blend into (``honest`` is ``[H, N]``)."""
        if self.blend_with == "residual_reweight" and honest.shape[0] >= 3:
            from fl_lightning.aggregators.functional import residual_reweight

            aggregate, _ = residual_reweight(honest)
            return aggregate.to(honest.dtype)
        return honest.mean(dim=0)

    def poison_updates(self, updates: Tensor, ctx: RoundContext) -> Tensor:
        """A copy of ``updates`` whose attacker rows are blended parameter by parameter."""
        rows, others = self.attacker_rows(ctx), self.other_rows(ctx)
        out = updates.clone()
        if not rows or not others:
            return out
        honest = self.honest_model(updates[others])
        for row in rows:
            draw = torch.rand(updates.shape[1], generator=self.round_generator(ctx, "mix", ctx.client_ids[row]))
            keep = (draw < self.rate).to(updates.device)
            out[row] = torch.where(keep, updates[row], honest)
        return out
