"""``local_steps`` through a whole fit: recorded in hparams and in the checkpoint; attacker diagnostics logged."""
from __future__ import annotations

import warnings

import pytest
import torch

from fl_lightning.attacks import LabelFlip, PixelBackdoor
from fl_lightning.aggregators import CoordinateMedian
from fl_lightning.checkpoint import load as load_checkpoint
from tests.helpers import Blobs, TinyNet, make_dm, make_trainer


def _backdoor(**kwargs) -> PixelBackdoor:
    settings = dict(target=1, clients=[0], size=2, value=3.0, poison_per_batch=4, extra_epochs=0, lr=0.1)
    settings.update(kwargs)
    return PixelBackdoor(**settings)


def test_local_steps_are_in_hparams_and_the_checkpoint(tmp_path, one_thread: None) -> None:
    trainer = make_trainer(tmp_path, rounds=2, local_steps=3, logger=None, attacks=[_backdoor(extra_steps=2)])
    trainer.fit(TinyNet(), make_dm(num_clients=3))
    assert trainer.hparams()["local_steps"] == 3
    assert trainer.hparams()["attack/PixelBackdoor/extra_steps"] == 2
    state = load_checkpoint(trainer.checkpoint_path)
    assert state["hparams"]["local_steps"] == 3
    resumed = make_trainer(tmp_path, rounds=3, local_steps=4, logger=trainer.logger, attacks=[_backdoor(extra_steps=2)])
    with pytest.warns(UserWarning, match=r"local_steps: 3 -> 4"):
        resumed.fit(TinyNet(), make_dm(num_clients=3), ckpt_path="last")
    assert "local_steps" not in make_trainer(tmp_path).hparams()  # epoch runs record no steps


def test_attackers_local_model_is_measured_every_active_round(tmp_path, one_thread: None) -> None:
    trainer = make_trainer(tmp_path, rounds=3, local_steps=5,
                           attacks=[_backdoor(extra_steps=10, rounds=[0, 2])])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        trainer.fit(TinyNet(), make_dm(num_clients=3))
    first, idle, last = (r.metrics for r in trainer.history)
    for metrics in (first, last):
        assert 0.0 <= metrics["attack/local_acc"] <= 1.0
        assert 0.0 <= metrics["attack/local_backdoor_asr"] <= 1.0
        assert metrics["attack/local_diverged"] in (0.0, 1.0)
    assert "attack/local_acc" not in idle  # the attack is not active in round 1
    # measured on the attacker's model, not the global one: the two differ
    assert first["attack/local_acc"] != first["test/acc"] or first["attack/local_backdoor_asr"] != \
        first["attack/backdoor_asr"]


def test_a_constant_predicting_attacker_is_named(tmp_path, one_thread: None) -> None:
    # two classes, every 0 relabelled 1: the attacker's model learns to answer 1 whatever the input
    attack = LabelFlip(source=0, target=1, clients=[1], extra_epochs=9, lr=0.5)
    trainer = make_trainer(tmp_path, rounds=1, attacks=[attack], aggregator=CoordinateMedian())
    with pytest.warns(RuntimeWarning, match=r"attacker client 1's local training diverged: .*"
                                            r"predicts one class"):
        trainer.fit(TinyNet(), make_dm(num_clients=3, dataset=Blobs(num_classes=2)))
    assert trainer.history[0].metrics["attack/local_diverged"] == 1.0


def test_honest_runs_log_no_attacker_metrics(tmp_path, one_thread: None) -> None:
    trainer = make_trainer(tmp_path, rounds=1, local_steps=2)
    trainer.fit(TinyNet(), make_dm(num_clients=3))
    assert not any(k.startswith("attack/local") for k in trainer.history[0].metrics)
    assert torch.isfinite(torch.tensor(trainer.history[0].metrics["test/acc"]))
