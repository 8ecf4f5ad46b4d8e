"""What happened in each round (``RoundRecord``) and the run's list of them (``RunHistory``), both checkpointable."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor


@dataclass
class RoundRecord:
    """What happened in one round: who took part, who was dropped, the weights and the metrics."""

    round: int
    client_ids: list[int]
    metrics: dict[str, float]
    client_weights: Tensor | None = None
    flagged_ids: list[int] = field(default_factory=list)
    dropped: dict[int, str] = field(default_factory=dict)
    kept_previous_model: bool = False
    #: why the round kept the previous model, phrased to follow "the round ..." ("" when it did not)
    kept_reason: str = ""
    #: the aggregator's diagnostics (tensors for histograms); not checkpointed
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def state_dict(self) -> dict[str, Any]:
        """The record as plain values that ``torch.load(weights_only=True)`` accepts."""
        return {"round": self.round, "client_ids": list(self.client_ids), "metrics": dict(self.metrics),
                "client_weights": self.client_weights, "flagged_ids": list(self.flagged_ids),
                "dropped": {str(k): v for k, v in self.dropped.items()},
                "kept_previous_model": self.kept_previous_model, "kept_reason": self.kept_reason}

    @staticmethod
    def from_state(state: dict[str, Any]) -> "RoundRecord":
        """The record :meth:`state_dict` described."""
        return RoundRecord(round=state["round"], client_ids=list(state["client_ids"]),
                           metrics=dict(state["metrics"]), client_weights=state["client_weights"],
                           flagged_ids=list(state["flagged_ids"]),
                           dropped={int(k): v for k, v in state["dropped"].items()},
                           kept_previous_model=state["kept_previous_model"],
                           kept_reason=state.get("kept_reason", ""))


class RunHistory(list):
    """The run's :class:`RoundRecord` list, stateful like every other checkpointed part."""

    def consecutive_failures(self) -> int:
        """How many of the latest rounds in a row kept the previous model (counted across a resume)."""
        count = 0
        for record in reversed(self):
            if not record.kept_previous_model:
                break
            count += 1
        return count

    def state_dict(self) -> list[dict[str, Any]]:
        """Every record's state, in round order."""
        return [record.state_dict() for record in self]

    def load_state_dict(self, state: list[dict[str, Any]]) -> None:
        """Replace the records with the saved ones."""
        self[:] = [RoundRecord.from_state(s) for s in state]
