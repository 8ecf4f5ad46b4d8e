"""Schedulers over the whole federated run: one client with all data, one local epoch per round, is a Lightning fit."""
from __future__ import annotations

import warnings
from typing import Any, Callable

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from tests.helpers import Blobs, make_dm, make_trainer
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from fl_lightning.callbacks import FederatedCallback

pytestmark = pytest.mark.usefixtures("one_thread")

SAMPLES, BATCH, EPOCHS = 64, 16, 6  # 4 batches per epoch
#: the value a plateau scheduler watches, per epoch (derived from the steps taken, the same on both sides)
WATCHED = [5.0, 4.0, 4.0, 4.5, 3.0, 3.0, 3.0, 2.0]


def step_lr(opt: torch.optim.Optimizer, total: int) -> Any:
    return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)}


def one_cycle(opt: torch.optim.Optimizer, total: int) -> Any:
    scheduler = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.5, total_steps=total)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def cosine(opt: torch.optim.Optimizer, total: int) -> Any:
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total // 2)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 2}}


def plateau(opt: torch.optim.Optimizer, total: int) -> Any:
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "monitor": "watched"}}


class Scheduled(L.LightningModule):
    """A linear classifier that records the learning rate of every step it takes."""

    def __init__(self, make_config: Callable[[torch.optim.Optimizer, int], Any]) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.Linear(64, 4)
        self.make_config = make_config
        self.lrs: list[float] = []
        self.steps = 0

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x.flatten(1))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        self.lrs.append(self._optimizer.param_groups[0]["lr"])
        self.log("watched", WATCHED[self.steps // (SAMPLES // BATCH) % len(WATCHED)], on_step=False, on_epoch=True)
        self.steps += 1
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self) -> Any:
        self._optimizer = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)
        return self.make_config(self._optimizer, int(self.trainer.estimated_stepping_batches))


def lightning_lrs(make_config: Callable) -> list[float]:
    module = Scheduled(make_config)
    x = torch.randn(SAMPLES, 1, 8, 8)
    loader = DataLoader(TensorDataset(x, torch.arange(SAMPLES) % 4), batch_size=BATCH, shuffle=True)
    trainer = L.Trainer(max_epochs=EPOCHS, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")
    trainer.fit(module, loader)
    return module.lrs


@pytest.mark.parametrize("engine", ["sequential", "lightning"])
@pytest.mark.parametrize("make_config", [step_lr, one_cycle, cosine, plateau])
def test_one_client_with_all_data_follows_lightnings_lr_trajectory(tmp_path, make_config: Callable,
                                                                  engine: str) -> None:
    expected = lightning_lrs(make_config)
    module = Scheduled(make_config)
    trainer = make_trainer(tmp_path, rounds=EPOCHS, local_epochs=1, batch_size=BATCH, engine=engine)
    trainer.fit(module, make_dm(num_clients=1, dataset=Blobs(num_train=SAMPLES)))
    assert len(module.lrs) == len(expected) == EPOCHS * SAMPLES // BATCH
    assert module.lrs == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert len(set(expected)) > 2  # the schedule did move
    # lr-SGD per round: the learning rate each round started with, as LearningRateMonitor names it
    per_round = [record.metrics["lr-SGD"] for record in trainer.history]
    assert per_round == pytest.approx(expected[::SAMPLES // BATCH], rel=1e-6)


def test_scheduler_scope_round_restarts_every_client(tmp_path) -> None:
    module = Scheduled(step_lr)
    trainer = make_trainer(tmp_path, rounds=3, local_epochs=2, batch_size=BATCH, scheduler_scope="round")
    trainer.fit(module, make_dm(num_clients=1, dataset=Blobs(num_train=SAMPLES)))
    per_epoch = module.lrs[::SAMPLES // BATCH]
    assert per_epoch == pytest.approx([0.1, 0.1] * 3)  # StepLR(step_size=2) never reaches its first decay
    assert [r.metrics["lr-SGD"] for r in trainer.history] == pytest.approx([0.1] * 3)


def test_run_schedule_spans_rounds_of_several_local_epochs_and_clients(tmp_path) -> None:
    module = Scheduled(step_lr)
    trainer = make_trainer(tmp_path, rounds=3, local_epochs=2, batch_size=BATCH)
    trainer.fit(module, make_dm(num_clients=2, dataset=Blobs(num_train=2 * SAMPLES)))
    # two clients a round, each starting from the run's schedule: StepLR halves every 2 epochs = every round
    first_steps = module.lrs[::SAMPLES // BATCH][::2]
    assert first_steps == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
    assert [r.metrics["lr-SGD"] for r in trainer.history] == pytest.approx([0.1, 0.05, 0.025])


class StopAfter(FederatedCallback):
    """Ends the run after round ``last`` (its checkpoint is still written), as a killed run would have."""

    def __init__(self, last: int) -> None:
        self.last = last

    def on_round_end(self, trainer: Any, record: Any) -> None:
        if record.round == self.last:
            trainer.should_stop = True


def test_the_schedule_is_saved_and_resumed_with_the_run(tmp_path) -> None:
    dm = make_dm(num_clients=1, dataset=Blobs(num_train=SAMPLES))
    full = Scheduled(one_cycle)
    make_trainer(tmp_path / "full", rounds=4, batch_size=BATCH).fit(full, dm)
    first = Scheduled(one_cycle)
    make_trainer(tmp_path / "cut", rounds=4, batch_size=BATCH, callbacks=[StopAfter(1)]).fit(first, dm)
    assert len(first.lrs) == 2 * SAMPLES // BATCH
    resumed = Scheduled(one_cycle)
    make_trainer(tmp_path / "cut", rounds=4, batch_size=BATCH).fit(resumed, dm, ckpt_path="last")
    assert first.lrs + resumed.lrs == pytest.approx(full.lrs, rel=1e-6)
    assert len(set(resumed.lrs)) > 2


def test_plateau_on_a_metric_no_round_reports_names_it(tmp_path) -> None:
    def missing(opt: torch.optim.Optimizer, total: int) -> Any:
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"}}

    trainer = make_trainer(tmp_path, rounds=2, batch_size=BATCH)
    with pytest.raises(ValueError, match=r"monitors 'val_loss'.*'val/val_loss'"):
        trainer.fit(Scheduled(missing), make_dm(num_clients=1, dataset=Blobs(num_train=SAMPLES)))


class PlateauOnValidation(Scheduled):
    """Lightning's documented pattern: ReduceLROnPlateau on the val_loss that validation_step logs."""

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.cross_entropy(self(x), y) * 0 + 1.0)  # never improves: the lr halves


def test_plateau_steps_once_per_round_on_the_validation_metric(tmp_path) -> None:
    def on_val_loss(opt: torch.optim.Optimizer, total: int) -> Any:
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"}}

    trainer = make_trainer(tmp_path, rounds=4, local_epochs=2, batch_size=BATCH)
    trainer.fit(PlateauOnValidation(on_val_loss), make_dm(num_clients=2, dataset=Blobs(num_train=SAMPLES)))
    # round 0 sets the best value, every later round fails to improve on it: one halving per round
    assert [r.metrics["lr-SGD"] for r in trainer.history] == pytest.approx([0.1, 0.1, 0.05, 0.025])


@pytest.mark.parametrize("engine", ["sequential", "lightning"])
def test_an_attackers_extra_epochs_do_not_run_the_schedule_past_its_end(tmp_path, engine: str) -> None:
    from fl_lightning.attacks import LabelFlip

    attack = LabelFlip(source=1, target=2, clients=1, extra_epochs=2, lr=None)
    trainer = make_trainer(tmp_path, rounds=2, batch_size=BATCH, engine=engine, attacks=[attack])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a client dropped by OneCycleLR's overrun would warn
        trainer.fit(Scheduled(one_cycle), make_dm(num_clients=2, dataset=Blobs(num_train=2 * SAMPLES)))
    assert not any(r.dropped for r in trainer.history)
