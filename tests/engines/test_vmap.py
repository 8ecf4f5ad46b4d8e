"""VmapEngine trains every client to the same model as SequentialEngine, or falls back to it with one warning."""
from __future__ import annotations

import warnings
from typing import Callable

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fl_lightning.context import LocalConfig
from fl_lightning.data.base import TensorData
from fl_lightning.engines import ClientTask, SequentialEngine, get_engine
from fl_lightning.engines.vmap import VmapEngine
from fl_lightning.param_layout import ParamLayout, flatten, module_tensors
from fl_lightning.models.base import ClassifierModule

TOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")


class SmallNet(ClassifierModule):
    """A conv + MLP classifier on 1x6x6 inputs whose optimizer comes from ``make_optimizer``."""

    def __init__(self, make_optimizer: Callable | None = None, num_classes: int = 3, conv: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        layers: list[nn.Module] = [nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2)] if conv else []
        width = 2 * 2 * 2 if conv else 36
        self.net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(width, 5), nn.Tanh(), nn.Linear(5, num_classes))
        self.make_optimizer = make_optimizer or (lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.5))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.make_optimizer(self.parameters())


class BatchNormNet(SmallNet):
    def __init__(self) -> None:
        super().__init__()
        self.net.insert(1, nn.BatchNorm2d(2))


class DropoutNet(SmallNet):
    def __init__(self) -> None:
        super().__init__()
        self.net.insert(-1, nn.Dropout(0.5))


class CustomStepNet(SmallNet):
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        return self.loss(self(x), y) * 2


class SumLossNet(SmallNet):
    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(logits, targets, reduction="sum")


def client_data(sizes: list[int], num_classes: int = 3, binary: bool = False) -> list[TensorData]:
    g = torch.Generator().manual_seed(1)
    out = []
    for n in sizes:
        y = torch.randint(0, num_classes, (n,), generator=g)
        x = torch.randn(n, 1, 6, 6, generator=g) + y.view(-1, 1, 1, 1).float()
        out.append(TensorData(x, y.float() if binary else y))
    return out


def run(engine, module: ClassifierModule, tasks: list[ClientTask]):
    """Train one round from the module's weights; returns (params [K, P], outcomes)."""
    layout = ParamLayout.from_module(module)
    global_params = flatten(module_tensors(module, layout.params, "params"))
    global_buffers = flatten(module_tensors(module, layout.buffers, "buffers"))
    out_params = torch.full((len(tasks), layout.num_params), float("nan"))
    out_buffers = torch.zeros(len(tasks), layout.num_buffers)
    engine.setup(module, layout)
    outcomes = engine.train_round(global_params, global_buffers, tasks, out_params, out_buffers)
    after = flatten(module_tensors(module, layout.params, "params"))
    assert torch.equal(after, global_params), "the module must hold the global weights after the round"
    return out_params, outcomes


def compare(module: ClassifierModule, tasks: list[ClientTask], **engine_kwargs) -> float:
    """Max |sequential - vmap| over client models and losses; asserts no fallback warning was raised."""
    seq_params, seq_out = run(SequentialEngine(), module, tasks)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        engine = VmapEngine(**engine_kwargs)
        vmap_params, vmap_out = run(engine, module, tasks)
    assert engine.fallback_reason is None
    assert [o.client_id for o in vmap_out] == [t.client_id for t in tasks]
    assert all(o.ok for o in vmap_out)
    assert [o.num_samples for o in vmap_out] == [o.num_samples for o in seq_out]
    diff = (seq_params - vmap_params).abs().max().item()
    loss_diff = max(abs(a.train_loss - b.train_loss) for a, b in zip(seq_out, vmap_out))
    assert diff < TOL, diff
    assert loss_diff < TOL, loss_diff
    assert (seq_params != seq_params[:1]).any(), "clients should train to different models"
    return diff


OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.05),
    "sgd_momentum_wd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-2),
    "sgd_dampening": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.5, dampening=0.3),
    "sgd_nesterov_maximize": lambda p: torch.optim.SGD(p, lr=0.02, momentum=0.5, nesterov=True, maximize=True),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01),
    "adam_wd_amsgrad": lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=1e-2, amsgrad=True, betas=(0.8, 0.9)),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_unequal_clients_match_sequential(name: str) -> None:
    sizes = [7, 30, 12, 1, 25, 16]
    configs = [LocalConfig(2, None, 8), LocalConfig(3, 0.02, 8), LocalConfig(1, None, 5),
               LocalConfig(2, None, 8), LocalConfig(4, 0.003, 16), LocalConfig(2, None, None)]
    tasks = [ClientTask(10 + k, d, c, seed=100 + k) for k, (d, c) in enumerate(zip(client_data(sizes), configs))]
    compare(SmallNet(OPTIMIZERS[name]), tasks)


def test_equal_clients_match_sequential_mlp_adam() -> None:
    tasks = [ClientTask(k, d, LocalConfig(2, None, 10), seed=k) for k, d in enumerate(client_data([20] * 5))]
    compare(SmallNet(OPTIMIZERS["adam"], conv=False), tasks)


def test_binary_bce_padded_batches_match_sequential() -> None:
    sizes = [9, 4, 13]
    tasks = [ClientTask(k, d, LocalConfig(2, None, 4), seed=k)
             for k, d in enumerate(client_data(sizes, num_classes=2, binary=True))]
    compare(SmallNet(OPTIMIZERS["sgd_momentum_wd"], num_classes=1), tasks)


def test_param_groups_with_their_own_lr_and_decay() -> None:
    def grouped(params):
        params = list(params)
        return torch.optim.SGD([{"params": params[:2], "lr": 0.2, "weight_decay": 0.1},
                                {"params": params[2:]}], lr=0.05, momentum=0.9)

    data = client_data([10, 6])
    tasks = [ClientTask(0, data[0], LocalConfig(2, None, 4), seed=0),
             ClientTask(1, data[1], LocalConfig(2, 0.01, 4), seed=1)]
    compare(SmallNet(grouped), tasks)


def test_max_batches_per_epoch_and_small_groups() -> None:
    data = client_data([40, 33, 8, 21, 40])
    tasks = [ClientTask(k, d, LocalConfig(3, None, 6, max_batches_per_epoch=2), seed=k) for k, d in enumerate(data)]
    compare(SmallNet(), tasks, max_group_size=2)
    compare(SmallNet(), tasks, memory_budget_mb=0.01)  # one client per group
    # two batches per epoch really is less training than the whole epoch
    capped, _ = run(VmapEngine(), SmallNet(), tasks[:1])
    full, _ = run(VmapEngine(), SmallNet(), [ClientTask(0, data[0], LocalConfig(3, None, 6), seed=0)])
    assert not torch.allclose(capped, full)


def test_frozen_and_unused_parameters_stay_global() -> None:
    module = SmallNet(OPTIMIZERS["sgd_momentum_wd"])
    module.net[0].weight.requires_grad_(False)
    module.unused = nn.Linear(2, 2)
    tasks = [ClientTask(k, d, LocalConfig(2, None, 4), seed=k) for k, d in enumerate(client_data([9, 5]))]
    compare(module, tasks)


def test_poisoned_tasks_run_sequentially_in_the_same_round() -> None:
    def flip(x: Tensor, y: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
        return x + 0.01 * torch.randn(x.shape, generator=g), (y + 1) % 3

    data = client_data([12, 10, 14])
    tasks = [ClientTask(0, data[0], LocalConfig(1, None, 4), seed=0),
             ClientTask(1, data[1], LocalConfig(2, None, 4), seed=1, batch_poisoner=flip),
             ClientTask(2, data[2], LocalConfig(1, None, 4), seed=2)]
    seq, _ = run(SequentialEngine(), SmallNet(), tasks)
    with pytest.warns(RuntimeWarning, match="batch poisoner"):
        engine = VmapEngine()
        out, outcomes = run(engine, SmallNet(), tasks)
    assert engine.fallback_reason is None
    assert [o.client_id for o in outcomes] == [0, 1, 2]
    assert (seq - out).abs().max() < TOL


@pytest.mark.parametrize("bad", [0, 1])
def test_failing_client_is_dropped_like_sequential(bad: int) -> None:
    data = client_data([10, 8, 12])
    data[bad] = TensorData(data[bad].inputs, data[bad].targets + 5)  # labels out of range: cross-entropy raises
    tasks = [ClientTask(k, d, LocalConfig(1, None, 4), seed=k) for k, d in enumerate(data)]
    with pytest.warns(RuntimeWarning) as record:
        out, outcomes = run(VmapEngine(), SmallNet(), tasks)
    assert any("failed under vmap" in str(w.message) for w in record)
    assert [o.ok for o in outcomes] == [k != bad for k in range(3)]
    with pytest.warns(RuntimeWarning):
        seq, _ = run(SequentialEngine(), SmallNet(), tasks)
    good = [k for k in range(3) if k != bad]
    assert (seq[good] - out[good]).abs().max() < TOL


@pytest.mark.parametrize("module, reason", [
    (BatchNormNet(), "buffers"),
    (DropoutNet(), "Dropout"),
    (CustomStepNet(), "training_step's loss is not loss(forward(x), y)"),
    (SumLossNet(), "mean of independent per-sample losses"),
    (SmallNet(lambda p: torch.optim.RMSprop(p, lr=0.01)), "RMSprop"),
])
def test_unsupported_module_falls_back_with_one_warning(module: ClassifierModule, reason: str) -> None:
    tasks = [ClientTask(k, d, LocalConfig(1, None, 4), seed=k) for k, d in enumerate(client_data([9, 6]))]
    engine = VmapEngine()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out, outcomes = run(engine, module, tasks)
        run_again = engine.train_round(*_globals(module), tasks, torch.empty_like(out),
                                       torch.zeros(len(tasks), ParamLayout.from_module(module).num_buffers))
    messages = [str(w.message) for w in caught if "VmapEngine" in str(w.message)]
    assert len(messages) == 1 and reason in messages[0], messages
    assert engine.fallback_reason is not None and all(o.ok for o in run_again)
    torch.manual_seed(0)
    seq, _ = run(SequentialEngine(), module, tasks)
    assert torch.equal(seq, out)


def _globals(module: nn.Module) -> tuple[Tensor, Tensor]:
    layout = ParamLayout.from_module(module)
    return (flatten(module_tensors(module, layout.params, "params")),
            flatten(module_tensors(module, layout.buffers, "buffers")))


def test_get_engine_by_name() -> None:
    assert isinstance(get_engine("vmap"), VmapEngine)
    with pytest.raises(ValueError, match="max_group_size"):
        VmapEngine(max_group_size=0)


def test_trainer_with_vmap_engine_reaches_the_sequential_global_model(tmp_path) -> None:
    from tests.helpers import TinyNet, flat_params, make_dm, make_trainer

    finals = {}
    for engine in ("sequential", "vmap"):
        torch.manual_seed(0)
        module = TinyNet()
        make_trainer(tmp_path / engine, engine=engine, rounds=2).fit(module, make_dm(num_clients=5, partition="classes"))
        finals[engine] = flat_params(module)
    assert (finals["sequential"] - finals["vmap"]).abs().max() < TOL


class PlainNet(L.LightningModule):
    """A plain LightningModule (no ClassifierModule, no ``loss``): its step is cross-entropy by hand."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(36, 5), nn.Tanh(), nn.Linear(5, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_plain_lightning_module_trains_under_vmap_like_sequential() -> None:
    tasks = [ClientTask(k, d, LocalConfig(2, None, 4), seed=k) for k, d in enumerate(client_data([9, 6, 7]))]
    assert compare(PlainNet(), tasks) < TOL


class LazyData:
    """Client data without ``.inputs``: only ``targets``, ``len`` and ``batches(order)`` (a lazy dataset)."""

    def __init__(self, data: TensorData) -> None:
        self._data, self.targets = data, data.targets

    def __len__(self) -> int:
        return len(self._data)

    def batches(self, order):
        return self._data.batches(order)


def test_lazy_client_data_is_trained_sequentially_with_one_warning() -> None:
    data = client_data([9, 6, 7])
    tasks = [ClientTask(k, LazyData(d), LocalConfig(1, None, 4), seed=k) for k, d in enumerate(data)]
    eager = [ClientTask(k, d, LocalConfig(1, None, 4), seed=k) for k, d in enumerate(data)]
    engine = VmapEngine()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = SmallNet()
        out, outcomes = run(engine, module, tasks)
        engine.train_round(*_globals(module), tasks, torch.empty_like(out), torch.zeros(len(tasks), 0))
    messages = [str(w.message) for w in caught if "lazy" in str(w.message)]
    assert len(messages) == 1, messages
    assert all(o.ok for o in outcomes)
    seq, _ = run(SequentialEngine(), SmallNet(), eager)
    assert torch.equal(seq, out)
