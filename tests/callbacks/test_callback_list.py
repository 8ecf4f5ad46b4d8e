"""What ``callbacks=`` takes: federated callbacks, one progress bar; a Lightning callback is refused with its fix."""
from __future__ import annotations

import pytest
from lightning.pytorch import callbacks as lightning_callbacks
from tests.helpers import TinyNet, make_dm, make_trainer

from fl_lightning.callbacks import EarlyStopping, FederatedCallback, ModelCheckpoint, ProgressBar, RoundProgressBar


class LrMonitorLike(lightning_callbacks.Callback):
    """A user's own Lightning callback."""


@pytest.mark.parametrize("callback, fix", [
    (lightning_callbacks.ModelCheckpoint(monitor="val_loss"), r"use fl_lightning\.callbacks\.ModelCheckpoint"),
    (lightning_callbacks.EarlyStopping(monitor="val_loss"), r"use fl_lightning\.callbacks\.EarlyStopping"),
    (lightning_callbacks.TQDMProgressBar(), r"use fl_lightning\.callbacks\.RoundProgressBar"),
    (lightning_callbacks.RichProgressBar(), r"use fl_lightning\.callbacks\.RoundProgressBar"),
    (LrMonitorLike(), r"write it as an fl_lightning\.callbacks\.FederatedCallback \(round-level hooks\), "
                      r"or run LrMonitorLike inside each client's own "
                      r"lightning\.Trainer with engine=LightningEngine\(trainer_kwargs=\{'callbacks': "
                      r"\[LrMonitorLike\(\.\.\.\)\]\}\)"),
])
def test_a_lightning_callback_is_refused_at_construction_naming_the_federated_equivalent(tmp_path, callback, fix):
    with pytest.raises(TypeError, match=rf"FederatedTrainer: callbacks must be fl_lightning FederatedCallbacks, got "
                                        rf"the Lightning callback {type(callback).__name__}; {fix}"):
        make_trainer(tmp_path, callbacks=[callback])


def test_something_else_is_refused_too(tmp_path):
    with pytest.raises(TypeError, match="got int; subclass fl_lightning.callbacks.FederatedCallback"):
        make_trainer(tmp_path, callbacks=[3])


class DotBar(ProgressBar):
    """A user's own progress bar, not a RoundProgressBar: prints a dot per round."""

    def __init__(self) -> None:
        self.dots = ""

    def on_round_logged(self, trainer, record) -> None:
        self.dots += "."


def test_a_user_progress_bar_replaces_the_default_one(tmp_path):
    default = make_trainer(tmp_path, enable_progress_bar=True)
    assert isinstance(default.progress_bar_callback, RoundProgressBar) and default.enable_progress_bar
    bar = DotBar()
    trainer = make_trainer(tmp_path, rounds=3, enable_progress_bar=True, callbacks=[bar])
    assert [c for c in trainer.callbacks if isinstance(c, ProgressBar)] == [bar]
    trainer.fit(TinyNet(), make_dm())
    assert bar.dots == "..."


def test_enable_progress_bar_false_removes_the_bar(tmp_path):
    trainer = make_trainer(tmp_path, enable_progress_bar=False)
    assert trainer.progress_bar_callback is None and not trainer.enable_progress_bar
    with pytest.raises(ValueError, match="enable_progress_bar=False but callbacks hold the progress bar DotBar"):
        make_trainer(tmp_path, enable_progress_bar=False, callbacks=[DotBar()])
    with pytest.raises(ValueError, match=r"callbacks hold 2 progress bars \(DotBar, RoundProgressBar\); keep one"):
        make_trainer(tmp_path, enable_progress_bar=True, callbacks=[DotBar(), RoundProgressBar()])
    quiet = make_trainer(tmp_path, enable_progress_bar=True)
    quiet.enable_progress_bar = False  # what a quiet CLI run does after construction
    assert quiet.progress_bar_callback is None
    quiet.enable_progress_bar = True
    assert isinstance(quiet.progress_bar_callback, RoundProgressBar)


def test_model_checkpoints_run_after_the_other_callbacks(tmp_path):
    """As in Lightning: a checkpoint sees every metric other callbacks add, and their stop request."""
    checkpoint, stopper, other = ModelCheckpoint(), EarlyStopping(monitor="test/loss"), FederatedCallback()
    trainer = make_trainer(tmp_path, callbacks=[checkpoint, stopper, other])
    assert trainer.callbacks == [stopper, other, checkpoint]
