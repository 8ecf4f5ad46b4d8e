"""Lightning Trainer arguments on FederatedTrainer, manual optimization, and a global generator left alone."""
from __future__ import annotations

import random
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from lightning.pytorch.demos.boring_classes import ManualOptimBoringModel
from tests.helpers import Blobs, TinyNet, flat_params, make_dm, make_trainer
from torch import Tensor

from fl_lightning.data.base import FederatedDataset, TensorData

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name, words", [
    ("max_epochs", "local_epochs"), ("max_steps", "rounds"), ("enable_checkpointing", "checkpoint_every"),
    ("strategy", "engine="), ("profiler", r"LightningEngine\(trainer_kwargs="),
    ("detect_anomaly", r"LightningEngine\(trainer_kwargs="), ("local_epoch", "did you mean"),
])
def test_other_lightning_arguments_name_their_federated_equivalent(tmp_path, name: str, words: str) -> None:
    with pytest.raises(TypeError, match=words) as caught:
        make_trainer(tmp_path, **{name: 1})
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("kwargs, words", [
    ({"limit_train_batches": 0.0}, "limit_train_batches"), ({"limit_train_batches": 1.5}, "limit_train_batches"),
    ({"limit_train_batches": 2, "max_batches_per_epoch": 2}, "not both"),
    ({"gradient_clip_algorithm": "max"}, "gradient_clip_algorithm"), ({"gradient_clip_val": -1.0}, "gradient_clip_val"),
    ({"accumulate_grad_batches": 0}, "accumulate_grad_batches"), ({"deterministic": "yes"}, "deterministic"),
    ({"scheduler_scope": "client"}, "scheduler_scope"),
])
def test_bad_lightning_arguments_are_refused_with_their_name(tmp_path, kwargs: dict, words: str) -> None:
    with pytest.raises((TypeError, ValueError), match=words):
        make_trainer(tmp_path, **kwargs)


def _fit(tmp_path, engine: str, module: Any = None, dm: Any = None, **kwargs: Any) -> tuple[Any, Tensor]:
    torch.manual_seed(0)
    module = module if module is not None else TinyNet()
    trainer = make_trainer(tmp_path / engine, rounds=2, engine=engine, **kwargs)
    trainer.fit(module, dm if dm is not None else make_dm(num_clients=3))
    return trainer, flat_params(module)


@pytest.mark.parametrize("kwargs", [
    {"gradient_clip_val": 0.05}, {"gradient_clip_val": 0.01, "gradient_clip_algorithm": "value"},
    {"accumulate_grad_batches": 3}, {"limit_train_batches": 0.5},
])
def test_trainer_arguments_act_alike_on_every_engine(tmp_path, kwargs: dict) -> None:
    _, plain = _fit(tmp_path / "plain", "sequential")
    _, sequential = _fit(tmp_path, "sequential", **kwargs)
    assert (sequential - plain).abs().max() > 1e-4, "the argument must change the training"
    _, lightning = _fit(tmp_path, "lightning", **kwargs)
    assert (lightning - sequential).abs().max() < 1e-5
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, vmap = _fit(tmp_path, "vmap", **kwargs)
    # clipping and accumulation run in the sequential loop; a batch cap vectorises
    assert any("falls back" in str(w.message) for w in caught) == ("limit_train_batches" not in kwargs)
    assert (vmap - sequential).abs().max() < 1e-5


def test_limit_train_batches_as_a_fraction_caps_each_clients_batches(tmp_path) -> None:
    trainer, _ = _fit(tmp_path, "sequential", limit_train_batches=0.5)
    sizes = [len(c) for c in trainer.datamodule.clients]
    caps = [trainer._local_config(n).max_batches_per_epoch for n in sizes]
    assert caps == [max(1, int(-(-n // 16) * 0.5)) for n in sizes]
    assert trainer.estimated_stepping_batches == 2 * 1 * max(caps)


def test_deterministic_holds_for_the_fit_and_is_restored(tmp_path) -> None:
    seen = []

    class Probe(TinyNet):
        def training_step(self, batch: Any, batch_idx: int) -> Tensor:
            seen.append(torch.are_deterministic_algorithms_enabled())
            return super().training_step(batch, batch_idx)

    before = torch.are_deterministic_algorithms_enabled()
    _fit(tmp_path, "sequential", module=Probe(), deterministic=True)
    assert seen and all(seen)
    assert torch.are_deterministic_algorithms_enabled() == before


class Vectors(FederatedDataset):
    """``(x[32], 0)`` samples for Lightning's BoringModel family."""

    num_classes = 2

    def load(self) -> tuple[TensorData, TensorData]:
        g = torch.Generator().manual_seed(0)
        return (TensorData(torch.randn(96, 32, generator=g), torch.zeros(96, dtype=torch.long)),
                TensorData(torch.randn(32, 32, generator=g), torch.zeros(32, dtype=torch.long)))


class ManualBoring(ManualOptimBoringModel):
    """Lightning's demo of manual optimization; the batch's first element is BoringModel's input."""

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        return super().training_step(batch[0], batch_idx)

    def test_step(self, batch: Any, batch_idx: int) -> Any:
        return super().test_step(batch[0], batch_idx)

    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        return super().validation_step(batch[0], batch_idx)


@pytest.mark.parametrize("engine", ["sequential", "lightning"])
def test_manual_optimization_federates(tmp_path, engine: str) -> None:
    torch.manual_seed(0)
    module = ManualBoring()
    start = flat_params(module)
    trainer = make_trainer(tmp_path, rounds=2, engine=engine, batch_size=8)
    trainer.fit(module, make_dm(num_clients=4, dataset=Vectors()))
    assert len(trainer.history) == 2 and not any(r.dropped for r in trainer.history)
    assert (flat_params(module) - start).abs().max() > 1e-3
    assert all(np.isfinite(r.metrics["clients/train_loss"]) for r in trainer.history)


def test_vmap_refuses_manual_optimization_before_round_zero(tmp_path) -> None:
    trainer = make_trainer(tmp_path, engine="vmap")
    with pytest.raises(ValueError, match="manual optimization"):
        trainer.fit(ManualBoring(), make_dm(num_clients=4, dataset=Vectors()))
    assert len(trainer.history) == 0


@pytest.mark.parametrize("engine", ["sequential", "vmap", "lightning"])
def test_fit_leaves_the_global_generators_where_they_were(tmp_path, engine: str) -> None:
    module = TinyNet(dropout=0.3)  # dropout draws from torch's generator in every client
    dm = make_dm(num_clients=3, dataset=Blobs(num_train=120))
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    before = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    trainer = make_trainer(tmp_path, rounds=2, engine=engine, seed_everything=False)
    trainer.fit(module, dm)
    trainer.test()
    assert torch.equal(torch.get_rng_state(), before[0])
    assert random.getstate() == before[1]
    assert np.array_equal(np.random.get_state()[1], before[2])


def test_the_checkpoint_holds_no_global_generator_state(tmp_path) -> None:
    trainer = make_trainer(tmp_path, rounds=1)
    trainer.fit(TinyNet(), make_dm(num_clients=2))
    state = torch.load(trainer.checkpoint_path, weights_only=True)
    assert "rng" not in state and "schedule" in state


def test_learning_rate_monitor_is_pointed_at_the_lr_every_round_logs(tmp_path) -> None:
    from lightning.pytorch.callbacks import LearningRateMonitor

    with pytest.raises(TypeError, match="lr-<Optimizer>"):
        make_trainer(tmp_path, callbacks=[LearningRateMonitor()])
    trainer = make_trainer(tmp_path, rounds=1)
    trainer.fit(TinyNet(), make_dm(num_clients=2))
    assert trainer.history[-1].metrics["lr-SGD"] == pytest.approx(0.1)
