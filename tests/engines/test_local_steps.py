"""``local_steps``: exactly that many optimizer steps per round on every engine, on data shorter and longer."""
from __future__ import annotations

import sys

import pytest
import torch
from torch import Tensor, nn

from fl_lightning.attacks import PixelBackdoor
from fl_lightning.attacks.compose import client_config
from fl_lightning.context import LocalConfig, SetupContext
from fl_lightning.data.base import TensorData
from fl_lightning.engines import ClientTask, SequentialEngine, VmapEngine
from fl_lightning.engines.batches import client_batches, local_passes, steps_to_epochs
from fl_lightning.engines.lightning import LightningEngine
from fl_lightning.models.base import ClassifierModule
from fl_lightning.param_layout import ParamLayout, flatten, module_tensors

#: client sizes at batch 2: 3 samples (2 batches a pass) and 40 samples (20 batches a pass)
SIZES = (3, 40)
STEPS = 7


class StepCounter(ClassifierModule):
    """One weight ``w`` whose loss has gradient exactly 1: SGD at lr 1 leaves ``w = -steps``."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        return self.w.expand(len(x), 2) + 0.0 * x.flatten(1)[:, :2]

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        return logits.mean(0).sum() / 2

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=1.0)


def _clients() -> list[TensorData]:
    g = torch.Generator().manual_seed(0)
    return [TensorData(torch.randn(n, 4, generator=g), torch.randint(0, 2, (n,), generator=g)) for n in SIZES]


def _steps_taken(engine, steps: int | None = STEPS, epochs: int = 1) -> list[float]:
    module = StepCounter()
    layout = ParamLayout.from_module(module)
    engine.setup(module, layout)
    params = flatten(module_tensors(module, layout.params, "params"))
    buffers = flatten(module_tensors(module, layout.buffers, "buffers"))
    data = _clients()
    tasks = [ClientTask(cid, d, LocalConfig(epochs=epochs, batch_size=2, max_batches_per_epoch=1, steps=steps),
                        seed=cid) for cid, d in enumerate(data)]
    out_p = torch.full((len(data), layout.num_params), float("nan"))
    out_b = torch.zeros(len(data), layout.num_buffers)
    outcomes = engine.train_round(params, buffers, tasks, out_p, out_b)
    engine.teardown()
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    return (-out_p[:, 0]).tolist()


@pytest.mark.parametrize("make_engine", [SequentialEngine, VmapEngine, LightningEngine],
                         ids=["sequential", "vmap", "lightning"])
def test_exactly_local_steps_on_data_shorter_and_longer(make_engine, one_thread: None) -> None:
    engine = make_engine()
    assert _steps_taken(engine) == [STEPS, STEPS]
    if isinstance(engine, VmapEngine):
        assert engine.fallback_reason is None  # counted under vmap itself, not its sequential fallback


def test_epochs_still_count_epochs_and_zero_steps_train_nothing(one_thread: None) -> None:
    # epoch mode keeps max_batches_per_epoch (1 here): 3 epochs are 3 steps whatever the client's size
    assert _steps_taken(SequentialEngine(), steps=None, epochs=3) == [3, 3]
    assert _steps_taken(SequentialEngine(), steps=0) == [0, 0]


def test_ray_engine_takes_exactly_local_steps(one_thread: None) -> None:
    ray = pytest.importorskip("ray", reason="RayEngine needs the 'ray' extra: pip install 'fl-lightning[ray]'")
    from fl_lightning.engines.ray import RayEngine

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        assert _steps_taken(RayEngine(max_concurrency=1)) == [STEPS, STEPS]
    finally:
        ray.shutdown()
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_batch_order_cycles_fresh_passes_and_cuts_the_last() -> None:
    cfg = LocalConfig(epochs=1, batch_size=2, steps=STEPS)
    short, long = client_batches(3, cfg, seed=1), client_batches(40, cfg, seed=1)
    assert len(short) == len(long) == STEPS
    assert local_passes(cfg, 3) == 4 and local_passes(cfg, 40) == 1
    # each pass of the short client covers its 3 samples once
    assert sorted(torch.cat(short[:2]).tolist()) == [0, 1, 2]
    assert steps_to_epochs(300, 4100, 64) == 5 and steps_to_epochs(0, 10, 2) == 0


def _setup_ctx(local_steps: int | None) -> SetupContext:
    return SetupContext(num_clients=4, num_rounds=2, seed=0, client_targets=[torch.arange(4)] * 4,
                        num_classes=4, input_shape=(1, 8, 8), local_steps=local_steps)


def test_attack_extra_steps_add_to_the_honest_steps() -> None:
    attack = PixelBackdoor(target=1, clients=[2], extra_epochs=0, extra_steps=20)
    attack.setup(_setup_ctx(local_steps=10))
    assert client_config([attack], 2, 0, LocalConfig(epochs=1, steps=10)).steps == 30
    assert client_config([attack], 1, 0, LocalConfig(epochs=1, steps=10)).steps == 10


@pytest.mark.parametrize("local_steps,kwargs,match", [
    (None, {"extra_epochs": 0, "extra_steps": 5}, r"extra_steps=5 needs a run that counts local steps"),
    (10, {"extra_epochs": 5}, r"extra_epochs=5 has no effect .* pass extra_steps"),
])
def test_extra_work_in_the_wrong_unit_is_refused(local_steps, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        PixelBackdoor(target=1, clients=[2], **kwargs).setup(_setup_ctx(local_steps))
