"""Round-level callbacks, shaped like Lightning's ``Callback``: ``on_*`` hooks and a ``state_dict``."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import lightning as L

    from fl_lightning.trainer import FederatedTrainer, RoundRecord


class FederatedCallback:
    """Hooks into the round loop of :class:`~fl_lightning.FederatedTrainer`; state is checkpointed."""

    def on_fit_start(self, trainer: "FederatedTrainer", module: "L.LightningModule") -> None:
        """After set-up, before the first round."""

    def on_round_start(self, trainer: "FederatedTrainer", round_idx: int) -> None:
        """Before the clients of ``round_idx`` train."""

    def on_round_end(self, trainer: "FederatedTrainer", record: "RoundRecord") -> None:
        """After the round's aggregation, evaluation and logging."""

    def on_fit_end(self, trainer: "FederatedTrainer", module: "L.LightningModule") -> None:
        """After the last round (the module holds the final global weights)."""

    @property
    def state_key(self) -> str:
        """Key of this callback's state inside a checkpoint."""
        return type(self).__name__

    def state_dict(self) -> dict[str, Any]:
        """State to save in checkpoints."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
