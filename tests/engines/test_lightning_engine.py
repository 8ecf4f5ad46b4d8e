"""LightningEngine trains each client with a real lightning.Trainer, and equals SequentialEngine where both apply."""
from __future__ import annotations

import logging
import warnings

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fl_lightning.context import LocalConfig
from fl_lightning.data.base import TensorData
from fl_lightning.engines import ClientTask, LightningEngine, SequentialEngine, get_engine
from fl_lightning.engines.local_training import LocalTrainingError
from fl_lightning.param_layout import ParamLayout, flatten, module_tensors

TOL = 1e-6


pytestmark = pytest.mark.usefixtures("one_thread")


class TinyMLP(L.LightningModule):
    """A user's own module: 8 -> 6 -> 3 MLP, plain SGD, logs its loss with ``self.log``."""

    def __init__(self, dropout: float = 0.0, batchnorm: bool = False, lr: float = 0.1) -> None:
        super().__init__()
        torch.manual_seed(0)
        layers: list[nn.Module] = [nn.Linear(8, 6)]
        if batchnorm:
            layers.append(nn.BatchNorm1d(6))
        layers += [nn.Tanh(), nn.Dropout(dropout), nn.Linear(6, 3)]
        self.net = nn.Sequential(*layers)
        self.lr = lr

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.5)


class ScheduledMLP(TinyMLP):
    """Steps a StepLR every 2 optimizer steps (Lightning's dict form with ``interval="step"``)."""

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.lr)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class ManualMLP(TinyMLP):
    """Manual optimisation: self.optimizers(), self.manual_backward, stepping in training_step."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        optimizer = self.optimizers()
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        self.log("train_loss", loss)


class LrAtEnd(L.Callback):
    """Records the first optimizer's learning rate when the client's training ends."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


def client_data(sizes: list[int], features: int = 8) -> list[TensorData]:
    g = torch.Generator().manual_seed(1)
    out = []
    for n in sizes:
        y = torch.randint(0, 3, (n,), generator=g)
        out.append(TensorData(torch.randn(n, features, generator=g) + y.view(-1, 1).float(), y))
    return out


def noisy_flip(inputs: Tensor, targets: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """A batch poisoner that draws from the client's generator (so batch order depends on it too)."""
    return inputs + 0.3 * torch.randn(inputs.shape, generator=generator), (targets + 1) % 3


def make_tasks(data: list[TensorData]) -> list[ClientTask]:
    """An honest client, an attacker with its own lr, batch size, batch cap and poisoner, and one more honest."""
    return [ClientTask(0, data[0], LocalConfig(epochs=2, batch_size=8), seed=11),
            ClientTask(1, data[1], LocalConfig(epochs=2, lr=0.3, batch_size=5, max_batches_per_epoch=3), seed=12,
                       batch_poisoner=noisy_flip),
            ClientTask(2, data[2], LocalConfig(epochs=1, batch_size=16), seed=13)]


def run_round(engine, module: L.LightningModule, tasks: list[ClientTask]):
    """One round from the module's weights: (outcomes, trained params, trained buffers, global params)."""
    layout = ParamLayout.from_module(module)
    global_params = flatten(module_tensors(module, layout.params, "params"))
    global_buffers = flatten(module_tensors(module, layout.buffers, "buffers"))
    out_params = torch.full((len(tasks), layout.num_params), float("nan"))
    out_buffers = torch.full((len(tasks), layout.num_buffers), float("nan"))
    engine.setup(module, layout)
    outcomes = engine.train_round(global_params, global_buffers, tasks, out_params, out_buffers)
    return outcomes, out_params, out_buffers, global_params


@pytest.mark.parametrize("dropout,batchnorm", [(0.0, False), (0.3, True)])
def test_same_seed_trains_the_same_clients_as_the_sequential_engine(dropout: float, batchnorm: bool) -> None:
    tasks = make_tasks(client_data([30, 40, 20]))
    seq = run_round(SequentialEngine(), TinyMLP(dropout, batchnorm), tasks)
    module = TinyMLP(dropout, batchnorm)
    lit = run_round(LightningEngine(), module, tasks)
    assert [o.error for o in lit[0]] == [None, None, None]
    assert (lit[1] - seq[1]).abs().max() < TOL
    assert (lit[2] - seq[2]).abs().max() < TOL if batchnorm else lit[2].numel() == 0
    assert [o.train_loss for o in lit[0]] == pytest.approx([o.train_loss for o in seq[0]], abs=TOL)
    assert (lit[1] - lit[3]).abs().amax(dim=1).min() > 1e-3  # every client actually trained
    # the module is left holding the global weights, and no Trainer stays attached to it
    assert torch.equal(flatten(module_tensors(module, ParamLayout.from_module(module).params, "params")), lit[3])
    assert module._trainer is None


def test_attacker_lr_and_poisoner_change_the_client_as_in_the_sequential_engine() -> None:
    data = client_data([30, 40, 20])
    honest = [ClientTask(1, data[1], LocalConfig(epochs=2, batch_size=5, max_batches_per_epoch=3), seed=12)]
    attacked = [make_tasks(data)[1]]
    plain = run_round(LightningEngine(), TinyMLP(), honest)[1]
    lit = run_round(LightningEngine(), TinyMLP(), attacked)[1]
    seq = run_round(SequentialEngine(), TinyMLP(), attacked)[1]
    assert (lit - plain).abs().max() > 1e-2  # the override and the poisoner did something
    assert (lit - seq).abs().max() < TOL


def test_scheduler_and_gradient_clipping_act_as_in_lightnings_own_trainer() -> None:
    data = client_data([36])[0]
    task = ClientTask(0, data, LocalConfig(epochs=1, batch_size=7), seed=5)  # 6 steps: StepLR halves lr 3 times
    recorder = LrAtEnd()
    module = ScheduledMLP()
    engine = LightningEngine(gradient_clip_val=0.05, trainer_kwargs={"callbacks": [recorder]})
    outcomes, trained, _, _ = run_round(engine, module, [task])
    assert outcomes[0].ok

    # the same client with Lightning's own Trainer: the engine's batch order, same clipping
    reference = ScheduledMLP()
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(task.seed))
    batches = [order[i:i + 7].tolist() for i in range(0, len(data), 7)]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data.inputs, data.targets),
                                         batch_sampler=batches)
    ref_recorder = LrAtEnd()
    L.Trainer(max_epochs=1, accelerator="cpu", devices=1, gradient_clip_val=0.05, logger=False,
              enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
              callbacks=[ref_recorder]).fit(reference, loader)
    assert recorder.lrs == ref_recorder.lrs == [pytest.approx(0.1 * 0.5 ** 3)]
    assert (trained[0] - flatten([p.detach() for p in reference.parameters()])).abs().max() < TOL

    unclipped = run_round(LightningEngine(), ScheduledMLP(), [task])[1]
    assert (unclipped - trained).abs().max() > 1e-3  # the clipping changed the client's model


class LambdaScheduledMLP(TinyMLP):
    """A closed-form schedule (``base_lr * 0.9 ** step``), which reads the scheduler's base learning rates."""

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.9 ** step)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


@pytest.mark.parametrize("module_type", [ScheduledMLP, LambdaScheduledMLP])
def test_attacker_lr_also_rebases_the_scheduler(module_type: type) -> None:
    task = ClientTask(0, client_data([36])[0], LocalConfig(epochs=1, lr=0.8, batch_size=7), seed=5)
    recorder = LrAtEnd()
    run_round(LightningEngine(trainer_kwargs={"callbacks": [recorder]}), module_type(), [task])
    expected = 0.8 * 0.5 ** 3 if module_type is ScheduledMLP else 0.8 * 0.9 ** 6
    assert recorder.lrs == [pytest.approx(expected)]


def test_a_raising_client_is_dropped_and_the_others_kept() -> None:
    data = client_data([30, 40, 20])
    data[1] = client_data([40], features=5)[0]  # wrong width: the module raises on this client's batches
    tasks = make_tasks(data)
    tasks[1].batch_poisoner = None
    module = TinyMLP()
    with pytest.warns(RuntimeWarning, match="client 1 failed and is dropped"):
        outcomes, trained, _, global_params = run_round(LightningEngine(), module, tasks)
    assert [o.ok for o in outcomes] == [True, False, True]
    assert "RuntimeError" in outcomes[1].error
    seq = run_round(SequentialEngine(), TinyMLP(), [tasks[0], tasks[2]])[1]
    assert (trained[[0, 2]] - seq).abs().max() < TOL
    assert torch.equal(flatten(module_tensors(module, ParamLayout.from_module(module).params, "params")),
                       global_params)
    assert module._trainer is None


def test_manual_optimisation_trains_alike_on_the_lean_loop_and_lightning() -> None:
    task = ClientTask(0, client_data([30])[0], LocalConfig(epochs=2, batch_size=8), seed=3)
    torch.manual_seed(0)
    lean_outcomes, lean, _, start = run_round(SequentialEngine(), ManualMLP(), [task])
    torch.manual_seed(0)
    outcomes, trained, _, global_params = run_round(LightningEngine(), ManualMLP(), [task])
    assert torch.equal(start, global_params)
    assert outcomes[0].ok and lean_outcomes[0].ok
    assert (trained[0] - global_params).abs().max() > 1e-3
    assert (trained[0] - lean[0]).abs().max() < TOL  # same batches, same steps
    assert outcomes[0].train_loss == outcomes[0].train_loss  # the logged loss, not NaN
    # a step that returns nothing: the mean of the loss it logged over the client's steps
    assert lean_outcomes[0].train_loss == pytest.approx(outcomes[0].logged["train_loss"], abs=1e-5)


def test_lightning_output_is_silenced_and_logger_levels_restored(caplog) -> None:
    import os

    lightning_dir = os.path.dirname(L.__file__)
    tasks = make_tasks(client_data([30, 40, 20]))
    with caplog.at_level(logging.INFO, logger="lightning.pytorch"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_round(LightningEngine(), TinyMLP(), tasks)
        assert logging.getLogger("lightning.pytorch").level == logging.INFO  # restored after the round
    said = " ".join(record.getMessage() for record in caplog.records)
    assert "GPU available" not in said and "max_epochs" not in said
    assert not [w for w in caught if w.filename.startswith(lightning_dir)]


def test_two_round_fit_with_engine_lightning_reaches_the_sequential_global_model(tmp_path) -> None:
    from tests.helpers import TinyNet, flat_params, make_dm, make_trainer

    finals = {}
    for engine in ("sequential", "lightning"):
        torch.manual_seed(0)
        module = TinyNet(dropout=0.2)
        trainer = make_trainer(tmp_path / engine, engine=engine, rounds=2, max_batches_per_epoch=3)
        trainer.fit(module, make_dm(num_clients=3))
        finals[engine] = flat_params(module)
        assert len(trainer.history) == 2 and not trainer.history[-1].dropped
    assert isinstance(get_engine("lightning"), LightningEngine)
    assert (finals["sequential"] - finals["lightning"]).abs().max() < 1e-5


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(accelerator="cpus"), ValueError, "did you mean 'cpu'"),
    (dict(accelerator=1), TypeError, "accelerator"),
    (dict(precision="64"), ValueError, "precision"),
    (dict(gradient_clip_val=0), ValueError, "gradient_clip_val"),
    (dict(accumulate_grad_batches=0), ValueError, "accumulate_grad_batches"),
    (dict(accumulate_grad_batches=2.0), TypeError, "accumulate_grad_batches"),
    (dict(num_threads=0), ValueError, "num_threads"),
    (dict(trainer_kwargs=[("max_steps", 3)]), TypeError, "trainer_kwargs"),
    (dict(trainer_kwargs={"max_epochs": 3}), ValueError, "local_epochs"),
    (dict(trainer_kwargs={"devices": 2}), ValueError, "devices"),
    (dict(trainer_kwargs={"max_steps": 3}), ValueError, "local_steps"),
    (dict(trainer_kwargs={"max_tim": 3}), ValueError, "did you mean 'max_time'"),
])
def test_wrong_settings_are_refused_at_construction(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        LightningEngine(**kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA to refuse accelerator='cuda'")
def test_an_accelerator_the_machine_lacks_is_refused_at_setup() -> None:
    module = TinyMLP()
    with pytest.raises(ValueError, match="LightningEngine: lightning.Trainer refuses.*not available"):
        LightningEngine(accelerator="cuda").setup(module, ParamLayout.from_module(module))


def test_bf16_mixed_precision_trains_and_keeps_float32_weights() -> None:
    module = TinyMLP()
    task = ClientTask(0, client_data([30])[0], LocalConfig(epochs=1, batch_size=8), seed=3)
    outcomes, trained, _, global_params = run_round(LightningEngine(precision="bf16-mixed"), module, [task])
    assert outcomes[0].ok and torch.isfinite(trained).all()
    assert (trained[0] - global_params).abs().max() > 1e-3
    assert all(p.dtype == torch.float32 for p in module.parameters())


def test_clipping_with_manual_optimisation_is_refused_at_setup() -> None:
    module = ManualMLP()
    with pytest.raises(ValueError, match="self.clip_gradients"):
        LightningEngine(gradient_clip_val=1.0).setup(module, ParamLayout.from_module(module))


def test_installed_callback_factories_run_for_every_client_with_one_scan_per_round(monkeypatch) -> None:
    from lightning.fabric.utilities import registry

    made: list[L.Callback] = []
    scans: list[dict] = []

    class Factory:
        """Stands for a package's registered ``lightning.pytorch.callbacks_factory`` entry point."""

        name = "stand_in"

        def load(self):
            return lambda: made.append(L.Callback()) or [made[-1]]

    def entry_points(**selection):
        scans.append(selection)
        return [Factory()] if selection.get("group") == "lightning.pytorch.callbacks_factory" else []

    monkeypatch.setattr(registry, "entry_points", entry_points)
    run_round(LightningEngine(), TinyMLP(), make_tasks(client_data([30, 40, 20])))
    assert registry.entry_points is entry_points  # the engine put the lookup back
    assert len(made) == 1 + 3 and len(set(map(id, made))) == 4  # setup's probe, then a fresh one per client
    assert len(scans) == 1 + 1  # setup's probe, then one scan for the whole round


def test_no_client_trainer_outlives_the_round() -> None:
    import gc
    import weakref

    class RememberTrainer(L.Callback):
        def __init__(self) -> None:
            self.refs: list[weakref.ref] = []

        def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            self.refs.append(weakref.ref(trainer))

    remember = RememberTrainer()
    run_round(LightningEngine(trainer_kwargs={"callbacks": [remember]}), TinyMLP(), make_tasks(client_data([30, 40, 20])))
    gc.collect()
    assert len(remember.refs) == 3 and all(ref() is None for ref in remember.refs)
