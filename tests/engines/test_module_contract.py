"""The lean loop keeps a LightningModule's own contract: schedulers, train hooks, self.log - judged against Lightning."""
from __future__ import annotations

import warnings
from typing import Any, Callable, Iterator

import lightning as L
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from fl_lightning.context import LocalConfig
from fl_lightning.engines import SequentialEngine
from fl_lightning.engines.base import ClientTask, train_scalars
from fl_lightning.engines.batches import client_batches
from fl_lightning.engines.local_training import LocalTrainingError, train_client
from fl_lightning.data.base import TensorData
from fl_lightning.param_layout import ParamLayout

HOOKS = ("on_train_start", "on_train_epoch_start", "on_train_epoch_end", "on_train_end")


class ScheduledMLP(L.LightningModule):
    """A small MLP whose ``configure_optimizers`` returns what ``make_config(optimizer)`` builds; records lrs and hooks."""

    def __init__(self, make_config: Callable[[torch.optim.Optimizer], Any] | None = None, log_extra: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
        self.make_config = make_config or (lambda opt: opt)
        self.log_extra = log_extra
        self.lrs: list[float] = []
        self.calls: list[str] = []

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        self.lrs.append(self._optimizer.param_groups[0]["lr"])
        self.calls.append("step")
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        if self.log_extra:
            self.log("batch_size", float(len(y)))
        return loss

    def configure_optimizers(self) -> Any:
        self._optimizer = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.5)
        return self.make_config(self._optimizer)


class HookedMLP(ScheduledMLP):
    """Records the four train hooks the lean loop runs around a client."""

    def on_train_start(self) -> None:
        self.calls.append("on_train_start")

    def on_train_epoch_start(self) -> None:
        self.calls.append("on_train_epoch_start")

    def on_train_epoch_end(self) -> None:
        self.calls.append("on_train_epoch_end")

    def on_train_end(self) -> None:
        self.calls.append("on_train_end")


def client(n: int = 30, seed: int = 0) -> TensorData:
    g = torch.Generator().manual_seed(seed)
    return TensorData(torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g))


class _EpochBatches:
    """A DataLoader ``batch_sampler`` replaying the lean loop's batches, one epoch's list per iteration."""

    def __init__(self, epochs: list[list[list[int]]]) -> None:
        self.epochs, self.current = epochs, 0

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.epochs[self.current]
        self.current += 1
        return iter(batches)

    def __len__(self) -> int:
        return len(self.epochs[0])


def lightning_run(module: L.LightningModule, data: TensorData, config: LocalConfig, seed: int) -> None:
    """Train ``module`` with Lightning's own Trainer on exactly the batches the lean loop draws from ``seed``."""
    batches = client_batches(len(data), config, seed)
    per_epoch = len(batches) // config.epochs
    epochs = [[b.tolist() for b in batches[e * per_epoch:(e + 1) * per_epoch]] for e in range(config.epochs)]
    loader = DataLoader(TensorDataset(data.inputs, data.targets), batch_sampler=_EpochBatches(epochs))
    trainer = L.Trainer(max_epochs=config.epochs, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, train_dataloaders=loader)


def lean_run(module: L.LightningModule, data: TensorData, config: LocalConfig, seed: int) -> float:
    return train_client(module, ClientTask(0, data, config, seed))


def step_lr(interval: str, frequency: int = 1) -> Callable:
    return lambda opt: {"optimizer": opt, "lr_scheduler": {
        "scheduler": torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5),
        "interval": interval, "frequency": frequency}}


SCHEDULES = {
    "steplr-step": step_lr("step"),
    "steplr-epoch": step_lr("epoch"),
    "steplr-step-every-3": step_lr("step", 3),
    "lambdalr-list": lambda opt: ([opt], [torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0 / (1 + e))]),
    "plateau-on-logged-loss": lambda opt: {"optimizer": opt, "lr_scheduler": {
        "scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0, threshold=10.0),
        "monitor": "train_loss"}},
}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_scheduler_changes_the_lr_exactly_as_lightnings_trainer(name: str) -> None:
    data, config, seed = client(30), LocalConfig(epochs=3, batch_size=8), 5
    lean, real = ScheduledMLP(SCHEDULES[name]), ScheduledMLP(SCHEDULES[name])
    lean_run(lean, data, config, seed)
    lightning_run(real, data, config, seed)
    assert len(lean.lrs) == 12
    assert lean.lrs == pytest.approx(real.lrs, rel=1e-12)
    assert len(set(lean.lrs)) > 1  # the schedule did change the lr
    assert lean._optimizer.param_groups[0]["lr"] == pytest.approx(real._optimizer.param_groups[0]["lr"])
    for a, b in zip(lean.parameters(), real.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_every_client_gets_a_fresh_scheduler() -> None:
    module, data = ScheduledMLP(step_lr("step")), client(16)
    for seed in (1, 2):
        module.lrs.clear()
        lean_run(module, data, LocalConfig(epochs=1, batch_size=4), seed)
        assert module.lrs == pytest.approx([0.1, 0.1, 0.05, 0.05])


def test_train_hooks_run_around_each_client_in_lightnings_order() -> None:
    data, config = client(20), LocalConfig(epochs=2, batch_size=8)
    lean, real = HookedMLP(), HookedMLP()
    lean_run(lean, data, config, 0)
    lightning_run(real, data, config, 0)
    assert lean.calls == real.calls
    assert lean.calls == (["on_train_start"] + 2 * (["on_train_epoch_start"] + 3 * ["step"] + ["on_train_epoch_end"])
                          + ["on_train_end"])
    lean.calls.clear()
    lean_run(lean, client(8, seed=1), LocalConfig(epochs=1, batch_size=8), 1)  # the next client: again
    assert lean.calls == ["on_train_start", "on_train_epoch_start", "step", "on_train_epoch_end", "on_train_end"]


def test_self_log_is_averaged_per_client_over_steps_then_weighted_by_samples() -> None:
    module = ScheduledMLP(log_extra=True)
    layout = ParamLayout.from_module(module)
    engine = SequentialEngine()
    engine.setup(module, layout)
    from fl_lightning.param_layout import flatten

    params = flatten([p for p in module.parameters()])
    tasks = [ClientTask(0, client(30), LocalConfig(1, batch_size=8), 0),
             ClientTask(1, client(10, 1), LocalConfig(1, batch_size=8), 1)]
    out = torch.empty(2, layout.num_params)
    outcomes = engine.train_round(params, torch.empty(0), tasks, out, torch.empty(2, 0))
    assert outcomes[0].logged["batch_size"] == pytest.approx((8 + 8 + 8 + 6) / 4)
    assert outcomes[1].logged["batch_size"] == pytest.approx((8 + 2) / 2)
    assert outcomes[0].logged["train_loss"] == pytest.approx(outcomes[0].train_loss)
    scalars = train_scalars(outcomes)
    assert scalars["train/batch_size"] == pytest.approx((7.5 * 30 + 5.0 * 10) / 40)
    assert set(scalars) == {"train/batch_size", "train/train_loss"}


@pytest.mark.parametrize("make_config, words", [
    (lambda opt: {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(opt)},
     "ReduceLROnPlateau"),
    (lambda opt: [opt, torch.optim.Adam(opt.param_groups[0]["params"])], "automatic_optimization = False"),
    (lambda opt: "sgd", "configure_optimizers"),
])
def test_configurations_the_lean_loop_cannot_apply_fail_at_setup(make_config: Callable, words: str) -> None:
    module = ScheduledMLP(make_config)
    with pytest.raises(ValueError, match=words):
        SequentialEngine().setup(module, ParamLayout.from_module(module))


def test_plateau_on_a_value_never_logged_names_it() -> None:
    module = ScheduledMLP(lambda opt: {"optimizer": opt, "lr_scheduler": {
        "scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(opt), "monitor": "val_loss"}})
    with pytest.raises(LocalTrainingError, match="val_loss"):
        lean_run(module, client(16), LocalConfig(1, batch_size=8), 0)


@pytest.mark.parametrize("module, reason", [
    (ScheduledMLP(step_lr("step")), "StepLR"),
    (HookedMLP(), "on_train_start"),
    (ScheduledMLP(log_extra=True), "batch_size"),
])
def test_vmap_falls_back_with_one_warning_for_what_it_cannot_honour(module: L.LightningModule, reason: str) -> None:
    from fl_lightning.engines.vmap import VmapEngine

    layout = ParamLayout.from_module(module)
    params = torch.cat([p.detach().flatten() for p in module.parameters()])
    tasks = [ClientTask(k, client(16, k), LocalConfig(1, batch_size=8), k) for k in range(3)]
    engine = VmapEngine()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine.setup(module, layout)
        for _ in range(2):
            out = torch.empty(3, layout.num_params)
            outcomes = engine.train_round(params, torch.empty(0), tasks, out, torch.empty(3, 0))
    fallbacks = [w for w in caught if "falls back" in str(w.message)]
    assert len(fallbacks) == 1 and reason in str(fallbacks[0].message)
    assert reason in engine.fallback_reason
    assert all(o.ok for o in outcomes) and all("train_loss" in o.logged for o in outcomes)


def test_vmap_reports_a_logged_loss_as_the_sequential_engine_does() -> None:
    from fl_lightning.engines.vmap import VmapEngine

    module = ScheduledMLP()
    layout = ParamLayout.from_module(module)
    params = torch.cat([p.detach().flatten() for p in module.parameters()])
    tasks = [ClientTask(k, client(16 + 4 * k, k), LocalConfig(2, batch_size=8), k) for k in range(3)]
    results = {}
    vmap_engine = VmapEngine()
    for engine in (SequentialEngine(), vmap_engine):
        engine.setup(module, layout)
        out = torch.empty(3, layout.num_params)
        results[type(engine).__name__] = engine.train_round(params, torch.empty(0), tasks, out, torch.empty(3, 0))
    assert vmap_engine.fallback_reason is None  # logging the loss itself needs no fallback
    for seq, vec in zip(results["SequentialEngine"], results["VmapEngine"]):
        assert vec.logged["train_loss"] == pytest.approx(seq.logged["train_loss"], rel=1e-4)


def test_lightning_engine_collects_self_log_like_the_lean_loop() -> None:
    from fl_lightning.engines.lightning import LightningEngine

    module = ScheduledMLP(log_extra=True)
    layout = ParamLayout.from_module(module)
    params = torch.cat([p.detach().flatten() for p in module.parameters()])
    tasks = [ClientTask(0, client(30), LocalConfig(1, batch_size=8), 0)]
    engine = LightningEngine()
    engine.setup(module, layout)
    (outcome,) = engine.train_round(params, torch.empty(0), tasks, torch.empty(1, layout.num_params),
                                    torch.empty(1, 0))
    assert outcome.logged["batch_size"] == pytest.approx((8 + 8 + 8 + 6) / 4)
    assert outcome.logged["train_loss"] == pytest.approx(outcome.train_loss, rel=1e-5)
