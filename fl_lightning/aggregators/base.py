"""The aggregator plug-in point: stateful like a Lightning ``Callback``, maths in ``functional``."""
from __future__ import annotations

from typing import Any, NamedTuple

from torch import Tensor

from fl_lightning.context import RoundContext, SetupContext


class _AggregationFields(NamedTuple):
    update: Tensor
    client_weights: Tensor | None
    diagnostics: dict[str, Any]


class AggregationResult(_AggregationFields):
    """What an aggregator returns for one round.

    ``update``: the ``[N]`` step added to the global parameters. ``client_weights``: ``[K]``
    non-negative weights summing to 1 (``None`` for rules without per-client weights, such as a
    coordinate median). ``diagnostics``: scalars and tensors for logging; the key ``"flagged"``,
    when present, is a ``[K]`` bool tensor of the clients the rule treated as suspicious. Left out,
    it is a new empty dict for each result (never one shared default).
    """

    __slots__ = ()

    def __new__(cls, update: Tensor, client_weights: Tensor | None = None,
                diagnostics: dict[str, Any] | None = None) -> "AggregationResult":
        return super().__new__(cls, update, client_weights, {} if diagnostics is None else diagnostics)


class Aggregator:
    """Base class: turn the ``[K, N]`` client updates of a round into one ``[N]`` update.

    Subclasses implement :meth:`aggregate`; those with memory across rounds (FoolsGold) also
    override :meth:`state_dict` / :meth:`load_state_dict`, which the trainer saves in checkpoints.
    """

    #: the fewest finite client updates the rule can aggregate
    min_clients: int = 1
    #: a client is flagged when its weight is below this fraction of the uniform weight 1/K
    flag_fraction: float = 0.5
    #: training samples the server holds out as its root set and trains a reference update on each
    #: round (passed as ``ctx.reference_update``); 0: the rule needs no reference (all but FLTrust)
    root_samples: int = 0

    @property
    def min_robust_clients(self) -> int:
        """The fewest clients among which the rule can single out one attacker (0: it never singles one out).

        Below it a round still aggregates, but an attacker may take a full share unflagged; deployments
        that lose clients (Flower) warn and count such rounds. Default: an honest majority of two
        against one, or :attr:`min_clients` if more.
        """
        return max(3, self.min_clients)

    def setup(self, ctx: SetupContext) -> None:
        """Check, at ``fit()`` start and before any training, that the rule can run on this federation.

        The base checks the number of clients per round (:meth:`validate`); a rule that needs the
        model's layout (FoolsGold's ``param``) also checks it here.
        """
        self.validate(ctx.clients_per_round)

    def aggregate(self, updates: Tensor, ctx: RoundContext) -> AggregationResult:
        """Aggregate the ``[K, N]`` updates of the clients ``ctx.client_ids``."""
        raise NotImplementedError(f"{type(self).__name__} must implement aggregate(updates, ctx)")

    def validate(self, clients_per_round: int) -> None:
        """Raise ``ValueError`` at ``fit()`` start if the rule cannot work with this many clients."""
        if clients_per_round < self.min_clients:
            raise ValueError(
                f"{type(self).__name__} needs at least {self.min_clients} clients per round, "
                f"got {clients_per_round}"
            )

    @property
    def state_key(self) -> str:
        """Key of this aggregator's state inside a checkpoint."""
        return type(self).__name__

    def hparams(self) -> dict[str, Any]:
        """Hyper-parameters to record with the run (public, simple attributes by default)."""
        return {k: v for k, v in vars(self).items()
                if not k.startswith("_") and isinstance(v, (int, float, str, bool, type(None)))}

    def state_dict(self) -> dict[str, Any]:
        """State carried across rounds (nothing by default)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hparams().items())
        return f"{type(self).__name__}({args})"


def flag_by_weight(weights: Tensor, fraction: float) -> Tensor:
    """Clients whose weight is below ``fraction`` of the uniform weight ``1/K``."""
    return weights < fraction / weights.numel()
