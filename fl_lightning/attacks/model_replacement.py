"""Model replacement (Bagdasaryan et al. 2020; paper Table 3): scale a backdoored update to survive averaging."""
from __future__ import annotations

from typing import Sequence

from torch import Tensor

from fl_lightning.attacks.base import Attack, ClientSpec
from fl_lightning.checks import check_positive
from fl_lightning.context import RoundContext


class ModelReplacement(Attack):
    """Multiplies its attackers' update rows by ``scale`` in ``rounds`` (paper: x100 in round 6).

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

    def __init__(self, scale: float = 100.0, rounds: Sequence[int] | None = (6,),
                 clients: ClientSpec | None = None, of: str | Attack | None = None,
                 extra_epochs: int = 0, lr: float | None = None, batch_size: int | None = None) -> None:
        super().__init__(clients=clients, rounds=rounds, extra_epochs=extra_epochs, lr=lr,
                         batch_size=batch_size, of=of)
        self.scale = check_positive(scale, "scale", "ModelReplacement")

    def poison_updates(self, updates: Tensor, ctx: RoundContext) -> Tensor:
        """A copy of ``updates`` whose attacker rows are multiplied by ``scale``."""
        out = updates.clone()
        rows = self.attacker_rows(ctx)
        if rows:
            out[rows] = updates[rows] * self.scale
        return out
