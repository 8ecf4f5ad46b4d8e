"""``FederatedCallback``: round-level hooks shaped like Lightning's ``Callback``, stateful through ``state_dict``."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import lightning as L

    from fl_lightning.trainer import FederatedTrainer, RoundRecord


class FederatedCallback:
    """Hooks into the round loop of :class:`~fl_lightning.FederatedTrainer`; its state is checkpointed.

    Order within a round: ``on_round_start`` -> clients train, attacks, aggregation, evaluation ->
    ``on_round_end`` (add numbers to ``record.metrics`` here; they are logged and checkpointed with
    the round) -> ``on_round_logged`` (the round's metrics are final: print or display them).
    """

    def on_fit_start(self, trainer: "FederatedTrainer", module: "L.LightningModule") -> None:
        """After set-up (and any resume), before the first round runs."""

    def on_round_start(self, trainer: "FederatedTrainer", round_idx: int) -> None:
        """Before the clients of ``round_idx`` train."""

    def on_round_end(self, trainer: "FederatedTrainer", record: "RoundRecord") -> None:
        """After the round's aggregation and evaluation, before its metrics are logged."""

    def on_round_logged(self, trainer: "FederatedTrainer", record: "RoundRecord") -> None:
        """After the round's metrics went to the loggers (its record is complete)."""

    def on_fit_end(self, trainer: "FederatedTrainer", module: "L.LightningModule") -> None:
        """After the last round (the module holds the final global weights)."""

    def teardown(self, trainer: "FederatedTrainer") -> None:
        """At the end of ``fit()``, also when it failed: release what the callback opened."""

    @property
    def state_key(self) -> str:
        """Key of this callback's state in a checkpoint: the class name (with settings: :meth:`_generate_state_key`)."""
        return type(self).__name__

    def _generate_state_key(self, **settings: Any) -> str:
        """``"ClassName{settings}"``: the key of a callback whose settings make it distinct, as Lightning forms it."""
        return f"{type(self).__qualname__}{repr(settings)}"

    def state_dict(self) -> dict[str, Any]:
        """State to save in checkpoints."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
