"""Callback and attack state is checkpointed under ``state_key``, as Lightning keys callbacks: resuming with a
different list (a progress bar fewer) keeps every part's state, and saved state no part takes is warned about
(issue 20, item 11)."""
from __future__ import annotations

import warnings

import pytest
import torch

import fl_lightning.checkpoint as ckpt
from fl_lightning.callbacks import EarlyStopping, ModelCheckpoint
from tests.helpers import TinyNet, make_dm, make_trainer
from tests.reliability.faults import Killed, KillAfterRound

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(root, callbacks, bar: bool, ckpt_path=None, rounds: int = 3):
    trainer = make_trainer(root, rounds=rounds, max_batches_per_epoch=1, callbacks=callbacks,
                           enable_progress_bar=bar)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(TinyNet(), make_dm(num_clients=3), ckpt_path=ckpt_path)
    return trainer, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def _interrupted(root, bar: bool = True) -> None:
    """Rounds 0 and 1 of 3 with a progress bar, an early stopper and a keep-all model checkpoint; killed after 1."""
    callbacks = [EarlyStopping(monitor="test/loss", patience=5), ModelCheckpoint(save_top_k=-1),
                 KillAfterRound(1)]
    with pytest.raises(Killed):
        _run(root, callbacks, bar)


def test_resuming_without_the_progress_bar_keeps_the_checkpoint_ranking(tmp_path) -> None:
    _interrupted(tmp_path)
    checkpoint, stopper = ModelCheckpoint(save_top_k=-1), EarlyStopping(monitor="test/loss", patience=5)
    trainer, messages = _run(tmp_path, [stopper, checkpoint], bar=False, ckpt_path="last")
    assert [r.round for r in trainer.history] == [0, 1, 2]
    # rounds 0 (restored) and 1, 2 (run now): a lost ranking would hold only the resumed rounds
    assert len(checkpoint.best_k_models) == 3, checkpoint.best_k_models
    assert stopper.best_score == min(r.metrics["test/loss"] for r in trainer.history)
    assert not [m for m in messages if "matches no callback" in m], messages


def test_saved_state_that_no_callback_takes_is_warned_about(tmp_path) -> None:
    _interrupted(tmp_path)
    _, messages = _run(tmp_path, [EarlyStopping(monitor="test/acc", mode="max")], bar=True, ckpt_path="last")
    warned = [m for m in messages if "matches no callback" in m]
    assert len(warned) == 1, messages
    assert "EarlyStopping{'monitor': 'test/loss', 'mode': 'min'}" in warned[0]
    assert "ModelCheckpoint{'monitor': 'test/acc', 'mode': 'max', 'every_n_rounds': 1}" in warned[0]


def test_two_callbacks_of_one_kind_keep_their_own_state(tmp_path) -> None:
    by_loss, by_acc = EarlyStopping(monitor="test/loss"), EarlyStopping(monitor="test/acc", mode="max")
    trainer, _ = _run(tmp_path, [by_loss, by_acc], bar=False, rounds=1)
    saved = ckpt.load(trainer.checkpoint_path)["callback_states"]
    assert set(saved) == {by_loss.state_key, by_acc.state_key}


def test_a_checkpoint_keyed_by_position_still_resumes(tmp_path) -> None:
    _interrupted(tmp_path)
    path = tmp_path / "checkpoints" / ckpt.CHECKPOINT_NAME
    state = ckpt.load(path)
    # the layout of checkpoints written before state_key keys: "<index>:<class name>"
    order = ["EarlyStopping", "KillAfterRound", "RoundProgressBar", "ModelCheckpoint"]
    by_class = {key.split("{")[0]: value for key, value in state["callback_states"].items()}
    state["callback_states"] = {f"{i}:{name}": by_class[name] for i, name in enumerate(order)}
    ckpt.save_atomic(state, path)
    checkpoint = ModelCheckpoint(save_top_k=-1)
    _, messages = _run(tmp_path, [EarlyStopping(monitor="test/loss", patience=5), checkpoint, KillAfterRound(9)],
                       bar=True, ckpt_path="last")
    assert len(checkpoint.best_k_models) == 3
    assert not [m for m in messages if "matches no callback" in m], messages
