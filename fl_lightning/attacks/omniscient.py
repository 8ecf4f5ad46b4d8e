"""Update-crafting attacks from the Byzantine-robustness literature: sign flip, ALIE, IPM, Mimic and Inf.

ALIE, IPM and Mimic are omniscient: they read the round's other finite rows, which they treat as
honest (an attack knows only its own clients). Honest rows are never written; every attack returns
a copy. With no other row in a round, the omniscient attacks leave their rows as they are. The
maths lives in :mod:`fl_lightning.attacks.functional`.
"""
from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor

from fl_lightning.attacks import functional as F
from fl_lightning.attacks.base import Attack, ClientSpec, ModelPoisoningAttack
from fl_lightning.checks import check_int, check_number, check_positive
from fl_lightning.context import RoundContext, SetupContext


class SignFlip(ModelPoisoningAttack):
    """Each attacker sends its own update reversed and scaled: ``-scale * U[k]`` (not omniscient)."""

    omniscient = False

    def __init__(self, scale: float = 1.0, clients: ClientSpec | None = None,
                 rounds: Sequence[int] | None = None, of: str | Attack | None = None,
                 extra_epochs: int = 0, lr: float | None = None, batch_size: int | None = None) -> None:
        super().__init__(clients=clients, rounds=rounds, extra_epochs=extra_epochs, lr=lr,
                         batch_size=batch_size, of=of)
        self.scale = check_positive(scale, "scale", "SignFlip")

    def craft(self, honest: Tensor, own: Tensor, ctx: RoundContext) -> Tensor:
        """:func:`~fl_lightning.attacks.functional.sign_flip` of the attackers' own rows."""
        return F.sign_flip(own, self.scale)


class ALIE(ModelPoisoningAttack):
    """"A little is enough" (Baruch et al. 2019): every attacker sends ``mean - z * std`` of the honest rows.

    ``mean`` and ``std`` (unbiased; 0 with a single honest row) are per coordinate. ``z=None`` takes
    the paper's largest ``z`` that still hides among the honest clients: with ``n`` rows in the
    round and ``f`` of them this attack's, ``s = floor(n/2 + 1) - f`` and ``z = Phi^-1((n - s) / n)``;
    ``s`` is raised to 1 when the attackers are a majority, so ``z`` stays finite.
    """

    def __init__(self, z: float | None = None, clients: ClientSpec | None = None,
                 rounds: Sequence[int] | None = None, of: str | Attack | None = None,
                 extra_epochs: int = 0, lr: float | None = None, batch_size: int | None = None) -> None:
        super().__init__(clients=clients, rounds=rounds, extra_epochs=extra_epochs, lr=lr,
                         batch_size=batch_size, of=of)
        self.z = None if z is None else check_number(z, "z", "ALIE", low=0.0)

    paper_z = staticmethod(F.alie_paper_z)

    def craft(self, honest: Tensor, own: Tensor, ctx: RoundContext) -> Tensor:
        """:func:`~fl_lightning.attacks.functional.alie` with ``n`` the round's usable rows."""
        z = self.z if self.z is not None else F.alie_paper_z(honest.shape[0] + own.shape[0], own.shape[0])
        return F.alie(honest, own.shape[0], z)


class IPM(ModelPoisoningAttack):
    """Inner-product manipulation (Xie et al. 2020): every attacker sends ``-epsilon`` times the honest mean."""

    def __init__(self, epsilon: float = 0.5, clients: ClientSpec | None = None,
                 rounds: Sequence[int] | None = None, of: str | Attack | None = None,
                 extra_epochs: int = 0, lr: float | None = None, batch_size: int | None = None) -> None:
        super().__init__(clients=clients, rounds=rounds, extra_epochs=extra_epochs, lr=lr,
                         batch_size=batch_size, of=of)
        self.epsilon = check_positive(epsilon, "epsilon", "IPM")

    def craft(self, honest: Tensor, own: Tensor, ctx: RoundContext) -> Tensor:
        """:func:`~fl_lightning.attacks.functional.ipm`."""
        return F.ipm(honest, own.shape[0], self.epsilon)


class Mimic(ModelPoisoningAttack):
    """Mimic (Karimireddy, He & Jaggi, ICLR 2022): every attacker sends a copy of one honest client's update.

    Copying one client over-weights its data, which hurts most under heterogeneity, while each row
    looks perfectly honest. ``victim`` names the client id to copy; ``None`` chooses it the first
    round the attack acts, as the honest client furthest out along the honest rows' top principal
    direction (:func:`~fl_lightning.attacks.functional.mimic_victim`), and keeps it for the run
    (saved in checkpoints). In a round without the victim the choice is made again among that
    round's clients and kept from then on.
    """

    def __init__(self, victim: int | None = None, clients: ClientSpec | None = None,
                 rounds: Sequence[int] | None = None, of: str | Attack | None = None,
                 extra_epochs: int = 0, lr: float | None = None, batch_size: int | None = None) -> None:
        super().__init__(clients=clients, rounds=rounds, extra_epochs=extra_epochs, lr=lr,
                         batch_size=batch_size, of=of)
        self.victim = None if victim is None else check_int(victim, "victim", "Mimic", minimum=0)
        self._chosen: int | None = None

    def setup(self, ctx: SetupContext) -> None:
        """Forget a victim chosen in an earlier fit, then draw the attackers."""
        self._chosen = None
        super().setup(ctx)

    @property
    def chosen_victim(self) -> int | None:
        """The client id being copied (``victim``, or the one chosen so far; ``None`` before any round)."""
        return self.victim if self.victim is not None else self._chosen

    def poison_updates(self, updates: Tensor, ctx: RoundContext) -> Tensor:
        """A copy of ``updates`` whose attacker rows copy the victim's row."""
        rows = self.attacker_rows(ctx)
        honest_rows = self.honest_rows(updates, ctx) if rows else []
        if not honest_rows:
            return updates.clone()
        ids = [ctx.client_ids[row] for row in honest_rows]
        honest = updates[honest_rows]
        if self.victim is None and self._chosen not in ids:
            self._chosen = ids[F.mimic_victim(honest)]
        out = updates.clone()
        target = self.chosen_victim
        if target in ids:
            out[rows] = F.mimic(honest, len(rows), ids.index(target)).to(updates.dtype)
        return out

    def state_dict(self) -> dict[str, Any]:
        """The attacker set and the chosen victim."""
        return {**super().state_dict(), "victim": self._chosen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the attacker set and the chosen victim."""
        super().load_state_dict(state)
        self._chosen = state.get("victim", self._chosen)


class Inf(ModelPoisoningAttack):
    """Every attacker sends ``+inf`` in every coordinate (ByzFL's ``Inf``): the server must drop such rows.

    The trainer drops non-finite rows before aggregation, so this attack tests that guard; it
    needs no other row.
    """

    omniscient = False

    def __init__(self, clients: ClientSpec | None = None, rounds: Sequence[int] | None = None,
                 of: str | Attack | None = None, extra_epochs: int = 0, lr: float | None = None,
                 batch_size: int | None = None) -> None:
        super().__init__(clients=clients, rounds=rounds, extra_epochs=extra_epochs, lr=lr,
                         batch_size=batch_size, of=of)

    def craft(self, honest: Tensor, own: Tensor, ctx: RoundContext) -> Tensor:
        """:func:`~fl_lightning.attacks.functional.inf`."""
        return F.inf(own, own.shape[0])
