"""Any LightningModule, any task: Lightning's own demos, regression and unlabeled data federate unchanged."""
from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.demos import BoringDataModule, BoringModel, DemoModel, LightningLSTM, LightningTransformer
from lightning.pytorch.demos.boring_classes import ManualOptimBoringModel
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset

from fl_lightning import FederatedDataModule
from fl_lightning.aggregators import FedAvg, ResidualReweight
from fl_lightning.attacks import LabelFlip, PixelBackdoor
from fl_lightning.labels import MissingLabelsError
from tests.helpers import flat_params, make_trainer

AGGREGATORS = {"fedavg": FedAvg, "residual_reweight": ResidualReweight}


class Tokens(Dataset):
    """A small generated token stream cut into ``(tokens, next_tokens)`` blocks, as ``WikiText2`` serves it."""

    def __init__(self, blocks: int = 32, block: int = 12, vocab: int = 20, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.data = torch.randint(0, vocab, (blocks * block + 1,), generator=g)
        self.blocks, self.block = blocks, block

    def __len__(self) -> int:
        return self.blocks

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        start = index * self.block
        return self.data[start:start + self.block], self.data[start + 1:start + self.block + 1]


def _fit(tmp_path, module: L.LightningModule, dm: FederatedDataModule, aggregator: str, **kwargs):
    trainer = make_trainer(tmp_path, rounds=2, aggregator=AGGREGATORS[aggregator](), engine="sequential", **kwargs)
    before = flat_params(module).clone()
    trainer.fit(module, datamodule=dm)
    assert len(trainer.history) == 2 and trainer.history[-1].metrics["clients/dropped"] == 0.0
    assert not torch.equal(before, flat_params(module))  # the global model moved
    return trainer


@pytest.mark.parametrize("aggregator", sorted(AGGREGATORS))
@pytest.mark.parametrize("model", [BoringModel, DemoModel])
def test_boring_demos_federate_unchanged(tmp_path, model, aggregator) -> None:
    dm = FederatedDataModule.from_lightning(BoringDataModule(), num_clients=4, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = _fit(tmp_path, model(), dm, aggregator)
        results = trainer.test()
    assert "test/acc" not in results and "test/acc" not in trainer.history[-1].metrics
    assert torch.isfinite(torch.tensor(trainer.history[-1].metrics["clients/train_loss"]))
    notes = [w for w in caught if "report training metrics only" in str(w.message)]
    # BoringModel has test_step / validation_step (they log nothing); DemoModel has neither: said once
    assert len(notes) == (1 if model is DemoModel else 0)


@pytest.mark.parametrize("aggregator", sorted(AGGREGATORS))
def test_manual_optimization_demo_on_the_sequential_engine(tmp_path, aggregator) -> None:
    dm = FederatedDataModule.from_lightning(BoringDataModule(), num_clients=4, seed=0)
    before = flat_params(module := ManualOptimBoringModel()).clone()
    trainer = _fit(tmp_path, module, dm, aggregator)
    assert len(trainer.history) == 2 and not torch.equal(before, flat_params(module))


def test_manual_optimization_demo_on_the_lightning_engine(tmp_path) -> None:
    dm = FederatedDataModule.from_lightning(BoringDataModule(), num_clients=4, seed=0)
    trainer = make_trainer(tmp_path, rounds=2, engine="lightning")
    before = flat_params(module := ManualOptimBoringModel()).clone()
    trainer.fit(module, datamodule=dm)
    assert len(trainer.history) == 2 and not torch.equal(before, flat_params(module))


@pytest.mark.parametrize("aggregator", sorted(AGGREGATORS))
@pytest.mark.parametrize("model", [LightningTransformer, LightningLSTM])
def test_language_model_demos_train_on_a_generated_token_set(tmp_path, model, aggregator) -> None:
    # 32 blocks over 4 clients, batches of 4: every batch is full (LightningLSTM carries its hidden state)
    dm = FederatedDataModule.from_datasets(Tokens(32), Tokens(8, seed=1), num_clients=4, seed=0)
    torch.manual_seed(0)
    trainer = _fit(tmp_path, model(vocab_size=20), dm, aggregator, batch_size=4)
    losses = [r.metrics["clients/train_loss"] for r in trainer.history]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert "test/acc" not in trainer.test()  # token pairs are not class labels: no accuracy made up


def _write_mnist_files(root, n: int) -> None:
    folder = root / "MNIST" / "complete"
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for name, size in (("training.pt", n), ("test.pt", n // 4)):
        targets = torch.arange(size) % 10
        images = (targets.view(-1, 1, 1) * 25 + torch.randint(0, 5, (size, 28, 28), generator=g)).to(torch.uint8)
        torch.save((images, targets), folder / name)


def test_mnist_demo_datamodule_from_local_files(tmp_path, monkeypatch) -> None:
    from lightning.pytorch.demos.mnist_datamodule import MNISTDataModule

    monkeypatch.setenv("PL_USE_MOCKED_MNIST", "1")  # Lightning's own reader of local files, no download
    _write_mnist_files(tmp_path, 160)
    dm = FederatedDataModule.from_lightning(MNISTDataModule(str(tmp_path), val_split=40, num_workers=0),
                                            num_clients=4, partition="classes", classes_per_client=5, seed=0)
    dm.setup()
    assert dm.num_classes == 10 and dm.input_shape == (1, 28, 28) and len(dm.test) == 40
    assert sum(len(c) for c in dm.clients) == 120 and dm.client_class_histogram().sum() == 120

    class Flat(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(28 * 28, 10)

        def forward(self, x: Tensor) -> Tensor:
            return self.layer(x.flatten(1))

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.cross_entropy(self(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    trainer = make_trainer(tmp_path, rounds=1, aggregator=ResidualReweight())
    trainer.fit(Flat(), datamodule=dm)
    assert 0.0 <= trainer.test()["test/acc"] <= 1.0  # no evaluation step, class scores: the arg-max fallback


class Regressor(L.LightningModule):
    """Float targets, a test_step that logs its own metric: the run reports it, and no accuracy."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x).squeeze(-1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.mse_loss(self(x), y)

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("mse", F.mse_loss(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _regression_data(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    return TensorDataset(x, x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3)


def test_regression_reports_its_test_step_metric_and_no_accuracy(tmp_path) -> None:
    dm = FederatedDataModule.from_datasets(_regression_data(200, 0), _regression_data(50, 1), num_clients=4)
    trainer = make_trainer(tmp_path, rounds=4, aggregator=ResidualReweight())
    trainer.fit(Regressor(), datamodule=dm)
    first, last = trainer.history[0].metrics, trainer.history[-1].metrics
    assert "test/mse" in last and not any(k in last for k in ("test/acc", "test/loss"))
    assert last["test/mse"] < first["test/mse"] and last["test/mse"] < 0.5  # targets' variance is ~5.3
    with pytest.raises(MissingLabelsError, match="LabelFlip needs integer class labels.*regression"):
        make_trainer(tmp_path / "flip", attacks=[LabelFlip(source=0, target=1, clients=1)]).fit(Regressor(), dm)


class AutoEncoder(L.LightningModule):
    """Unlabeled images: ``TensorDataset(x)`` gives ``[x]`` batches, as under a Lightning DataLoader."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder, self.decoder = nn.Linear(16, 4), nn.Linear(4, 16)

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(torch.relu(self.encoder(x)))

    def training_step(self, batch, batch_idx):
        (x,) = batch
        loss = F.mse_loss(self(x), x)
        self.log("recon", loss)
        return loss

    def test_step(self, batch, batch_idx):
        (x,) = batch
        self.log("recon", F.mse_loss(self(x), x))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)


def _unlabeled(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 4, generator=g) @ torch.randn(4, 16, generator=torch.Generator().manual_seed(9)))


def test_unlabeled_autoencoder_trains_under_iid(tmp_path) -> None:
    dm = FederatedDataModule.from_datasets(_unlabeled(160, 0), _unlabeled(40, 1), num_clients=4, partition="iid")
    trainer = make_trainer(tmp_path, rounds=5, local_epochs=2)
    trainer.fit(AutoEncoder(), datamodule=dm)
    recon = [r.metrics["test/recon"] for r in trainer.history]
    assert recon[-1] < 0.7 * recon[0]
    assert "train/recon" in trainer.history[-1].metrics and "test/acc" not in trainer.history[-1].metrics


@pytest.mark.parametrize("attack", [lambda: LabelFlip(source=0, target=1, clients=1),
                                    lambda: PixelBackdoor(target=1, clients=1),
                                    lambda: LabelFlip(clients={"holders_of": 0})])
def test_label_attacks_on_unlabeled_data_are_refused_before_round_0(tmp_path, attack) -> None:
    dm = FederatedDataModule.from_datasets(_unlabeled(40, 0), num_clients=4)
    trainer = make_trainer(tmp_path, rounds=2, attacks=[attack()])
    module = AutoEncoder()
    before = flat_params(module).clone()
    with pytest.raises(MissingLabelsError, match=r"needs integer class labels, but the samples carry none"):
        trainer.fit(module, datamodule=dm)
    assert len(trainer.history) == 0 and torch.equal(before, flat_params(module))


def test_validation_step_runs_on_the_validation_split_and_test_step_on_the_test_split(tmp_path) -> None:
    class Both(Regressor):
        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val_mae", (self(x) - y).abs().mean())
            self.log("seen", float(len(y)))

    def fit(**data):
        dm = FederatedDataModule.from_datasets(_regression_data(80, 0), _regression_data(20, 1), num_clients=2, **data)
        trainer = make_trainer(tmp_path / str(len(data)), rounds=1)
        trainer.fit(Both(), datamodule=dm)
        return trainer.history[-1].metrics

    with_val, without = fit(val=_regression_data(12, 2)), fit()
    assert {"val/val_mae", "val/seen", "test/mse"} <= set(with_val) and "test/acc" not in with_val
    assert with_val["val/seen"] == 12.0 and without["val/seen"] == 20.0  # no validation split: the test split


def test_mnist_demo_validation_split_comes_from_its_val_dataloader(tmp_path, monkeypatch) -> None:
    from lightning.pytorch.demos.mnist_datamodule import MNISTDataModule

    monkeypatch.setenv("PL_USE_MOCKED_MNIST", "1")
    _write_mnist_files(tmp_path, 160)
    dm = FederatedDataModule.from_lightning(MNISTDataModule(str(tmp_path), val_split=40, num_workers=0),
                                            num_clients=4)
    dm.setup()
    assert len(dm.val) == 40 and len(dm.test) == 40 and sum(len(c) for c in dm.clients) == 120


def test_class_accuracy_on_unlabeled_data_is_refused_before_round_0(tmp_path) -> None:
    from fl_lightning.callbacks import ClassAccuracy

    dm = FederatedDataModule.from_datasets(_unlabeled(40, 0), _unlabeled(8, 1), num_clients=4)
    trainer = make_trainer(tmp_path, rounds=2, callbacks=[ClassAccuracy(classes=[0])])
    with pytest.raises(MissingLabelsError, match="ClassAccuracy needs integer class labels"):
        trainer.fit(AutoEncoder(), datamodule=dm)
    assert len(trainer.history) == 0


def test_attack_success_rate_keeps_working_for_a_classifier_with_its_own_test_step(tmp_path) -> None:
    from tests.helpers import TinyNet, make_dm

    class OwnMetrics(TinyNet):
        def test_step(self, batch, batch_idx):
            x, y = batch
            self.log("nll", F.cross_entropy(self(x), y))

    trainer = make_trainer(tmp_path, rounds=2, attacks=[LabelFlip(source=1, target=2, clients=1)])
    trainer.fit(OwnMetrics(), make_dm(num_clients=4))
    metrics = trainer.history[-1].metrics
    assert "test/nll" in metrics and 0.0 <= metrics["attack/asr"] <= 1.0
    assert "test/acc" not in metrics and "test/loss" not in metrics  # the module logs no accuracy
