"""Model replacement (Bagdasaryan et al. 2020; paper Table 3): scale a backdoored update to survive averaging."""
from __future__ import annotations

from typing import Sequence

from torch import Tensor

from fl_lightning.attacks.base import Attack, ClientSpec
from fl_lightning.checks import check_positive
from fl_lightning.context import RoundContext


class ModelReplacement(Attack):
    """Multiplies its attackers' update rows by ``scale`` in ``rounds`` (paper: x100 in round 6).

    ``scale="exact"`` is Bagdasaryan et al.'s replacement: ``1 / w``, with ``w`` the attackers' total
    weight under the rule's own weighting (:meth:`~fl_lightning.aggregators.Aggregator.nominal_weights`:
    ``1/n`` for a plain mean of n clients, the sample share under ``FedAvg(weighted=True)``), so that
    if the other updates cancel, the new global model is the attacker's local model. Their ``gamma = n /
    eta`` is this for the plain mean and server learning rate ``eta = 1``. A number is used as given.

    It only scales; the malicious update comes from an attack listed before it on the same clients.
    Share that attack's clients with ``of=``, so the two can never drift apart::

        backdoor = PixelBackdoor(target=2, clients=1, rounds=[6])
        attacks = [backdoor, ModelReplacement(scale=100, rounds=[6], of=backdoor)]

    ``of`` may also be the earlier attack's class name (``of="PixelBackdoor"``, for YAML configs)
    when the trainer sets the attacks up with :func:`~fl_lightning.attacks.compose.setup_attacks`.
    Without ``of`` it acts on its own ``clients`` (explicit ids such as ``[3]`` in both attacks
    work too). Bagdasaryan et al. choose ``scale = n / eta`` (clients per round over server lr).
    Its clients join every round where it is active even when clients are sampled: the attack is
    defined as a replacement in that round.
    """

    joins_active_rounds = True

    def __init__(self, scale: float | str = 100.0, rounds: Sequence[int] | None = (6,),
                 clients: ClientSpec | None = None, of: str | Attack | None = None,
                 extra_epochs: int = 0, lr: float | None = None, batch_size: int | None = None) -> None:
        super().__init__(clients=clients, rounds=rounds, extra_epochs=extra_epochs, lr=lr,
                         batch_size=batch_size, of=of)
        if isinstance(scale, str):
            if scale != "exact":
                raise ValueError(f"ModelReplacement: scale must be a positive number or \"exact\", got {scale!r}")
            self.scale: float | str = scale
        else:
            self.scale = check_positive(scale, "scale", "ModelReplacement")

    def boost(self, ctx: RoundContext, rows: list[int]) -> float:
        """The factor applied to the attacker rows ``rows`` this round: ``scale``, or 1 / their nominal weight."""
        if self.scale != "exact":
            return float(self.scale)
        weight = float(ctx.nominal_weights()[rows].sum())
        if not weight > 0:
            raise ValueError(f"ModelReplacement: the rule gives the attackers {rows} no weight, so no boost "
                             "replaces the model; use a numeric scale")
        return 1.0 / weight

    def poison_updates(self, updates: Tensor, ctx: RoundContext) -> Tensor:
        """A copy of ``updates`` whose attacker rows are multiplied by :meth:`boost`."""
        out = updates.clone()
        rows = self.attacker_rows(ctx)
        if rows:
            out[rows] = updates[rows] * self.boost(ctx, rows)
        return out
