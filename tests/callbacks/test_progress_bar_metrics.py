"""The progress bar shows what the module logs with prog_bar=True beside the round's own numbers."""
from __future__ import annotations

from typing import Any

import pytest
from tests.helpers import TinyNet, make_dm, make_trainer
from torch import Tensor

from fl_lightning.callbacks import RoundProgressBar

pytestmark = pytest.mark.usefixtures("one_thread")


class Shown(TinyNet):
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss = super().training_step(batch, batch_idx)
        self.log("shown_loss", loss, prog_bar=True)
        self.log("hidden_loss", loss)
        return loss


class StatusBar(RoundProgressBar):
    statuses: list[str] = []

    def on_round_logged(self, trainer: Any, record: Any) -> None:
        super().on_round_logged(trainer, record)
        StatusBar.statuses.append(self._progress.tasks[0].fields["status"])


@pytest.mark.parametrize("engine", ["sequential", "lightning"])
def test_prog_bar_metrics_are_shown_beside_the_rounds_own(tmp_path, engine: str) -> None:
    StatusBar.statuses = []
    trainer = make_trainer(tmp_path, rounds=2, engine=engine, callbacks=[StatusBar()], enable_progress_bar=True)
    trainer.fit(Shown(), make_dm(num_clients=3))
    assert set(trainer.progress_bar_metrics) == {"train/shown_loss"}
    assert trainer.progress_bar_metrics["train/shown_loss"] == trainer.history[-1].metrics["train/shown_loss"]
    assert len(StatusBar.statuses) == 2
    assert all("acc " in s and "train/shown_loss " in s and "hidden" not in s for s in StatusBar.statuses)
