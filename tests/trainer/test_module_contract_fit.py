"""A user's LightningModule in a federated fit: its self.log reaches train/<name>, its test_step the test metrics."""
from __future__ import annotations

from typing import Any

import pytest
import torch
from lightning.pytorch.loggers import Logger
from torch import Tensor
from torch.utils.data import TensorDataset

from fl_lightning import FederatedDataModule
from tests.helpers import TinyNet, make_dm, make_trainer


class RecordingLogger(Logger):
    """A minimal Lightning logger keeping every scalar it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics: list[tuple[int | None, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.metrics.append((step, dict(metrics)))


class LoggingNet(TinyNet):
    """Logs its batch size in training_step, and accuracy / loss in test_step under its own names."""

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        inputs, targets = batch
        self.log("batch_size", float(len(targets)))
        return self.loss(self(inputs), targets)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        inputs, targets = batch
        logits = self(inputs)
        self.log("acc", (logits.argmax(-1) == targets).float().mean())
        self.log("test/nll", self.loss(logits, targets))
        self.log("seen", float(len(targets)))


class ValidatingNet(TinyNet):
    """Only a validation_step: evaluation runs it, and what it logs is ``val/<name>``."""

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        inputs, targets = batch
        self.log("val_acc", (self(inputs).argmax(-1) == targets).float().mean())


def test_self_log_in_training_step_reaches_train_metrics_weighted_by_samples(tmp_path) -> None:
    dm = make_dm(num_clients=3)
    dm.setup()
    trainer = make_trainer(tmp_path, rounds=1, batch_size=16)
    trainer.fit(LoggingNet(), dm)
    sizes = [len(c) for c in dm.clients]
    per_client = [sum(min(16, n - s) for s in range(0, n, 16)) / len(range(0, n, 16)) for n in sizes]
    expected = sum(m * n for m, n in zip(per_client, sizes)) / sum(sizes)
    assert trainer.history[-1].metrics["train/batch_size"] == pytest.approx(expected)


def test_test_step_logs_become_the_rounds_test_metrics_and_reach_the_logger(tmp_path) -> None:
    logger = RecordingLogger()
    trainer = make_trainer(tmp_path, rounds=2, logger=logger)
    module, dm = LoggingNet(), make_dm(num_clients=2)
    trainer.fit(module, dm)
    metrics = trainer.history[-1].metrics
    assert {"test/acc", "test/nll", "test/seen"} <= set(metrics)
    # the mean over the test set is weighted by batch size: 80 test samples in one batch of 1000
    assert metrics["test/seen"] == pytest.approx(80.0)
    with torch.no_grad():
        test = dm.test
        acc = float((module(test.inputs).argmax(-1) == test.targets).float().mean())
    assert metrics["test/acc"] == pytest.approx(acc)
    assert "test/loss" not in metrics  # the module's own names, not the default path's
    logged = {name for _, scalars in logger.metrics for name in scalars}
    assert {"test/acc", "test/nll", "train/batch_size"} <= logged


def test_validation_step_logs_become_val_metrics(tmp_path) -> None:
    trainer = make_trainer(tmp_path, rounds=1)
    trainer.fit(ValidatingNet(), make_dm(num_clients=2))
    metrics = trainer.history[-1].metrics
    assert "val/val_acc" in metrics and 0.0 <= metrics["val/val_acc"] <= 1.0
    assert "test/acc" not in metrics and "test/val_acc" not in metrics


def test_module_without_eval_steps_keeps_accuracy_and_loss(tmp_path) -> None:
    trainer = make_trainer(tmp_path, rounds=1)
    trainer.fit(TinyNet(), make_dm(num_clients=2))
    assert {"test/acc", "test/loss"} <= set(trainer.history[-1].metrics)


def test_no_test_data_means_no_test_metrics_and_no_crash(tmp_path) -> None:
    g = torch.Generator().manual_seed(0)
    train = TensorDataset(torch.randn(40, 1, 8, 8, generator=g), torch.arange(40) % 4)
    dm = FederatedDataModule.from_datasets(train, None, num_clients=2, seed=0)
    trainer = make_trainer(tmp_path, rounds=1)
    trainer.fit(LoggingNet(), dm)
    metrics = trainer.history[-1].metrics
    assert not any(name.startswith("test/") for name in metrics)
    assert "train/batch_size" in metrics


class PlateauWithoutMonitor(TinyNet):
    def configure_optimizers(self) -> Any:
        optimizer = super().configure_optimizers()
        return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)}


class NeedsTrainer(TinyNet):
    def configure_optimizers(self) -> Any:
        optimizer = super().configure_optimizers()
        total = self.trainer.estimated_stepping_batches
        return [optimizer], [torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=total)]


@pytest.mark.parametrize("engine", ["sequential", "vmap"])
def test_configure_optimizers_reads_the_federated_estimated_stepping_batches(tmp_path, engine: str) -> None:
    trainer = make_trainer(tmp_path, engine=engine, rounds=3, local_epochs=2, max_batches_per_epoch=2)
    trainer.fit(NeedsTrainer(), make_dm(num_clients=2))
    assert trainer.estimated_stepping_batches == 3 * 2 * 2  # rounds x local epochs x batches of a client
    assert len(trainer.history) == 3


@pytest.mark.parametrize("engine", ["sequential", "vmap"])
@pytest.mark.parametrize("module, words", [(PlateauWithoutMonitor, "ReduceLROnPlateau")])
def test_a_configuration_that_cannot_apply_fails_at_fit_start(tmp_path, engine: str, module: type,
                                                              words: str) -> None:
    trainer = make_trainer(tmp_path, engine=engine)
    with pytest.raises(ValueError, match=words):
        trainer.fit(module(), make_dm(num_clients=2))
    assert len(trainer.history) == 0  # before any round
