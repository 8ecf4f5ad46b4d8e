"""``EarlyStopping``: stop the rounds once a monitored metric stops improving (or turns NaN/Inf)."""
from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

from fl_lightning.callbacks.base import FederatedCallback
from fl_lightning.callbacks.monitor import MODES, is_better, monitored_value, worst
from fl_lightning.checks import check_bool, check_choice, check_instance, check_int, check_number

if TYPE_CHECKING:
    import lightning as L

    from fl_lightning.trainer import FederatedTrainer, RoundRecord

log = logging.getLogger(__name__)
_OWNER = "EarlyStopping"


class EarlyStopping(FederatedCallback):
    """Sets ``trainer.should_stop`` after a round when ``monitor`` has not improved for ``patience`` rounds.

    The trainer finishes that round (logging, callbacks, its resume checkpoint), then runs no more.
    A run resumed from that checkpoint stays stopped; one resumed with a larger ``patience`` goes on.

    Args:
        monitor: the round metric to watch (``"test/loss"``, ``"test/acc"``, ``"attack/asr"``...).
        patience: rounds in a row without improvement after which the run stops.
        mode: ``"min"`` when a smaller value is better, ``"max"`` when a larger one is.
        min_delta: the least change that counts as an improvement.
        check_finite: stop as soon as the metric is NaN or infinite.
    """

    def __init__(self, monitor: str, patience: int = 3, mode: str = "min", min_delta: float = 0.0,
                 check_finite: bool = True) -> None:
        self.monitor = check_instance(monitor, str, "monitor", _OWNER)
        self.patience = check_int(patience, "patience", _OWNER, minimum=0)
        self.mode = check_choice(mode, MODES, "mode", _OWNER)
        self.min_delta = check_number(min_delta, "min_delta", _OWNER, low=0.0)
        self.check_finite = check_bool(check_finite, "check_finite", _OWNER)
        self._reset()
        self._restored: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        """Its monitor and mode, as Lightning's ``EarlyStopping`` keys its state."""
        return self._generate_state_key(monitor=self.monitor, mode=self.mode)

    def _reset(self) -> None:
        self.best_score = worst(self.mode)
        self.wait_count = 0
        #: the round after which this callback stopped the run (``None``: it has not)
        self.stopped_round: int | None = None
        self.stop_reason = ""
        self._monitor_seen = False

    def on_fit_start(self, trainer: "FederatedTrainer", module: "L.LightningModule") -> None:
        """Start afresh, or from a resumed run's state: a run this callback stopped stays stopped, unless
        ``patience`` now allows more rounds."""
        restored, self._restored = self._restored, None
        self._reset()
        if restored:
            self.best_score = float(restored["best_score"])
            self.wait_count = int(restored["wait_count"])
            self.stopped_round = restored["stopped_round"]
            self.stop_reason = restored["stop_reason"]
            self._monitor_seen = bool(restored["monitor_seen"])
        if self.stopped_round is None:
            return
        if self.stop_reason == "patience" and self.wait_count < self.patience:
            self.stopped_round, self.stop_reason = None, ""
            return
        trainer.should_stop = True
        log.info("%s: the run stopped after round %d (%s); no further rounds", _OWNER, self.stopped_round,
                 self.stop_reason)

    def on_round_logged(self, trainer: "FederatedTrainer", record: "RoundRecord") -> None:
        """Compare the round's ``monitor`` with the best so far; ask the trainer to stop when it is time."""
        value = monitored_value(_OWNER, self.monitor, record, self._monitor_seen)
        self._monitor_seen = True
        if value is None:
            return
        if self.check_finite and not math.isfinite(value):
            self._stop(trainer, record.round, "non-finite",
                       f"{self.monitor} = {value} is not finite")
        elif is_better(value, self.best_score, self.mode, self.min_delta):
            self.best_score, self.wait_count = value, 0
        else:
            self.wait_count += 1
            if self.wait_count >= self.patience:
                self._stop(trainer, record.round, "patience",
                           f"{self.monitor} did not improve on {self.best_score:.6g} for {self.wait_count} rounds")

    def _stop(self, trainer: "FederatedTrainer", round_idx: int, reason: str, message: str) -> None:
        self.stopped_round, self.stop_reason = round_idx, reason
        trainer.should_stop = True
        log.info("%s: stopping after round %d: %s", _OWNER, round_idx, message)

    def state_dict(self) -> dict[str, Any]:
        """Best value, rounds without improvement and whether (and why) the run was stopped."""
        return {"best_score": self.best_score, "wait_count": self.wait_count, "stopped_round": self.stopped_round,
                "stop_reason": self.stop_reason, "monitor_seen": self._monitor_seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back :meth:`state_dict`, applied at ``on_fit_start`` (``patience`` stays this instance's own)."""
        self._restored = dict(state) if state else None
