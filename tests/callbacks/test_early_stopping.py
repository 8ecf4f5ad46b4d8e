"""EarlyStopping: the run ends after the right round, its last checkpoint is written, resume stays stopped."""
from __future__ import annotations

import math

import pytest
import torch
from tests.helpers import TinyNet, make_dm, make_trainer

from fl_lightning.callbacks import EarlyStopping, FederatedCallback


class Feed(FederatedCallback):
    """Writes a known value per round into the round's metrics (a monitor the test controls)."""

    def __init__(self, values: list[float], key: str = "feed/loss") -> None:
        self.values, self.key = values, key

    def on_round_end(self, trainer, record) -> None:
        record.metrics[self.key] = self.values[record.round]


@pytest.mark.parametrize("values, mode, patience, min_delta, stop_after", [
    ([1.0, 0.8, 0.9, 0.85, 0.7, 0.6, 0.5, 0.4], "min", 2, 0.0, 3),     # 0.9, 0.85 do not beat 0.8
    ([1.0, 0.8, 0.9, 0.7, 0.75, 0.74, 0.73, 0.7], "min", 3, 0.0, 6),   # best 0.7 at round 3, 3 rounds without
    ([1.0, 0.96, 0.95, 0.5, 0.4, 0.3, 0.2, 0.1], "min", 2, 0.06, 2),   # steps under min_delta do not count
    ([0.1, 0.2, 0.3, 0.3, 0.4, 0.5, 0.6, 0.7], "max", 1, 0.0, 3),      # a tie is no improvement
    ([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], "max", 1, 0.0, None),   # always improving: all 8 rounds
])
def test_stops_after_the_right_round(tmp_path, values, mode, patience, min_delta, stop_after):
    stopper = EarlyStopping(monitor="feed/loss", mode=mode, patience=patience, min_delta=min_delta)
    trainer = make_trainer(tmp_path, rounds=8, callbacks=[Feed(values), stopper])
    trainer.fit(TinyNet(), make_dm())
    rounds_run = 8 if stop_after is None else stop_after + 1
    assert len(trainer.history) == rounds_run
    assert stopper.stopped_round == stop_after
    assert trainer.should_stop == (stop_after is not None)


def test_a_non_finite_monitor_stops_at_once_unless_told_not_to(tmp_path):
    values = [1.0, 0.5, math.nan, 0.4, 0.3]
    stopper = EarlyStopping(monitor="feed/loss", patience=5)
    trainer = make_trainer(tmp_path, rounds=5, callbacks=[Feed(values), stopper])
    trainer.fit(TinyNet(), make_dm())
    assert len(trainer.history) == 3 and stopper.stopped_round == 2
    lenient = EarlyStopping(monitor="feed/loss", patience=5, check_finite=False)
    trainer = make_trainer(tmp_path, rounds=5, callbacks=[Feed(values), lenient])
    trainer.fit(TinyNet(), make_dm())
    assert len(trainer.history) == 5 and lenient.stopped_round is None


def test_resume_after_a_stop_runs_no_more_rounds_and_a_larger_patience_goes_on(tmp_path):
    values = [1.0, 0.8, 0.9, 0.95, 0.7, 0.6]

    def run(patience: int, ckpt_path: str | None = None):
        stopper = EarlyStopping(monitor="feed/loss", patience=patience)
        trainer = make_trainer(tmp_path, rounds=6, logger=None, callbacks=[Feed(values), stopper])
        module = TinyNet()
        trainer.fit(module, make_dm(), ckpt_path=ckpt_path)
        return trainer, stopper, module

    stopped, _, stopped_module = run(patience=2)
    assert len(stopped.history) == 4
    saved = torch.load(stopped.checkpoint_path, weights_only=True)
    assert saved["next_round"] == 4, "the round that stopped the run is checkpointed"

    again, again_stopper, again_module = run(patience=2, ckpt_path="last")
    assert len(again.history) == 4 and again_stopper.stopped_round == 3, "resumed after the stop: no round runs"
    assert torch.equal(again.global_params, stopped.global_params)

    longer, longer_stopper, _ = run(patience=3, ckpt_path="last")
    assert [r.round for r in longer.history] == [0, 1, 2, 3, 4, 5], "a larger patience continues the same run"
    assert longer_stopper.stopped_round is None and longer_stopper.best_score == 0.6


def test_missing_monitor_and_wrong_settings_are_named(tmp_path):
    trainer = make_trainer(tmp_path, rounds=2, callbacks=[EarlyStopping(monitor="test/los")])
    with pytest.raises(ValueError, match=r"EarlyStopping: monitor 'test/los' is not a metric of round 0 "
                                         r"\(did you mean 'test/loss'\?\); available: "):
        trainer.fit(TinyNet(), make_dm())
    with pytest.raises(ValueError, match="EarlyStopping: unknown mode 'minimum'"):
        EarlyStopping(monitor="test/loss", mode="minimum")
    with pytest.raises(ValueError, match="EarlyStopping: patience must be an int >= 0"):
        EarlyStopping(monitor="test/loss", patience=-1)
    with pytest.raises(ValueError, match="EarlyStopping: min_delta must be"):
        EarlyStopping(monitor="test/loss", min_delta=-0.1)
    with pytest.raises(TypeError, match="EarlyStopping: monitor must be a str"):
        EarlyStopping(monitor=None)


def test_any_callback_may_stop_the_run(tmp_path):
    class StopAtRound1(FederatedCallback):
        def on_round_end(self, trainer, record):
            if record.round == 1:
                trainer.should_stop = True

    trainer = make_trainer(tmp_path, rounds=5, callbacks=[StopAtRound1()])
    trainer.fit(TinyNet(), make_dm())
    assert len(trainer.history) == 2
    assert torch.load(trainer.checkpoint_path, weights_only=True)["next_round"] == 2
    trainer.fit(TinyNet(), make_dm())  # a new fit starts without the old stop
    assert len(trainer.history) == 2 and trainer.should_stop
