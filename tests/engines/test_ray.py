"""RayEngine on a local 2-CPU Ray: same models as the sequential engine, failures survived, data sent once."""
from __future__ import annotations

import gc
import importlib
import os
import sys
import time
from collections import deque
from typing import Iterator

import pytest
import ray
import torch
from torch import Tensor

from fl_lightning.context import LocalConfig
from fl_lightning.data.base import TensorData
from fl_lightning.engines import ClientTask, Engine, SequentialEngine, get_engine
from fl_lightning.engines.base import torch_threads
from fl_lightning.engines.ray import RayEngine
from fl_lightning.param_layout import ParamLayout, flatten, module_tensors
from tests import helpers
from tests.helpers import Blobs, TinyNet, flat_params, make_dm, make_trainer, metrics_without_time

NUM_CLIENTS = 5


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """One local Ray for the whole module: starting Ray and its workers dominates the run time."""
    # the tests' helpers are not installed on the workers: pickle their classes by value, as a user
    # with a module defined outside an installed package would (see docs/scale-out.md)
    ray.cloudpickle.register_pickle_by_value(helpers)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    # tests/conftest.py keeps a local Ray on loopback; a change in Ray that undid it must fail here
    addresses = {node["NodeManagerAddress"] for node in ray.nodes()}
    assert all(a.startswith("127.") for a in addresses), f"Ray left loopback: {addresses}"
    yield
    ray.shutdown()
    ray.cloudpickle.unregister_pickle_by_value(helpers)


@pytest.fixture(scope="module")
def clients() -> list[TensorData]:
    dm = make_dm(num_clients=NUM_CLIENTS, dataset=Blobs(num_train=200, num_classes=4))
    dm.setup()
    return dm.clients


@pytest.fixture(scope="module")
def engine(ray_cluster: None) -> Iterator[RayEngine]:
    """One engine (two actors) shared by the tests: every round reloads the whole global state anyway."""
    engine = RayEngine(max_concurrency=2)
    module = _module()
    engine.setup(module, ParamLayout.from_module(module))
    yield engine
    engine.teardown()


def _module() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet(hidden=8, batchnorm=True, dropout=0.2)  # float and int buffers, global-RNG dropout


def _tasks(clients: list[TensorData], round_idx: int, poisoners: dict | None = None,
           precision: str = "32-true") -> list[ClientTask]:
    poisoners = poisoners or {}
    return [ClientTask(cid, data, LocalConfig(epochs=2, batch_size=16), seed=1000 * round_idx + cid,
                       batch_poisoner=poisoners.get(cid), precision=precision) for cid, data in enumerate(clients)]


def _run(engine: Engine, module: TinyNet, clients: list[TensorData], rounds: int = 2,
         poisoners: dict | None = None, setup: bool = True, precision: str = "32-true"
         ) -> tuple[list[Tensor], list[list]]:
    """``rounds`` rounds of plain averaging; returns each round's local parameters and outcomes."""
    layout = ParamLayout.from_module(module)
    if setup:
        engine.setup(module, layout)
    params = flatten(module_tensors(module, layout.params, "params"))
    buffers = flatten(module_tensors(module, layout.buffers, "buffers"))
    locals_, outcomes = [], []
    for r in range(rounds):
        out_p = torch.full((len(clients), layout.num_params), float("nan"))
        out_b = torch.full((len(clients), layout.num_buffers), float("nan"))
        outcome = engine.train_round(params, buffers, _tasks(clients, r, poisoners, precision), out_p, out_b)
        ok = torch.tensor([o.ok for o in outcome])
        params, buffers = out_p[ok].mean(0), out_b[ok].mean(0)
        locals_.append(out_p.clone())
        outcomes.append(outcome)
    return locals_, outcomes


def test_clear_error_without_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    # first in the module: Ray is imported but not started while its modules are hidden
    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "fl_lightning.engines.ray")
    with pytest.raises(ImportError, match=r"pip install 'fl-lightning\[ray\]'"):
        importlib.import_module("fl_lightning.engines.ray")


def test_same_models_as_sequential_engine(engine: RayEngine, clients: list[TensorData]) -> None:
    with torch_threads(1):
        expected, _ = _run(SequentialEngine(), _module(), clients)
    got, outcomes = _run(engine, _module(), clients, setup=False)
    for want, have in zip(expected, got):
        assert torch.equal(want, have)  # same loop, same seeds, same thread count: bit-identical
    assert all(o.ok and o.num_samples == len(clients[o.client_id]) for o in outcomes[-1])
    assert [o.client_id for o in outcomes[-1]] == list(range(NUM_CLIENTS))


def test_workers_train_at_the_task_precision(engine: RayEngine, clients: list[TensorData]) -> None:
    with torch_threads(1):
        full, _ = _run(SequentialEngine(), _module(), clients, rounds=1)
        expected, _ = _run(SequentialEngine(), _module(), clients, rounds=1, precision="bf16-mixed")
    got, _ = _run(engine, _module(), clients, rounds=1, setup=False, precision="bf16-mixed")
    assert torch.equal(expected[0], got[0])  # the workers autocast to bf16 as the in-process loop does
    assert not torch.equal(full[0], got[0])  # and that is not the float32 result


def test_a_pool_ray_cannot_place_fails_clearly(engine: RayEngine, clients: list[TensorData]) -> None:
    starved = RayEngine()
    starved.worker_start_timeout_s = 2.0
    module = _module()
    starved.setup(module, ParamLayout.from_module(module))  # the shared engine holds both CPUs
    try:
        with pytest.raises(RuntimeError, match="no client worker could start within 2 s"):
            _run(starved, module, clients, rounds=1, setup=False)
    finally:
        starved.teardown()
    assert ray.is_initialized()


def test_client_data_is_sent_once_and_references_do_not_grow(engine: RayEngine, clients: list[TensorData]) -> None:
    _run(engine, _module(), clients, rounds=1, setup=False)
    puts, refs = engine.stats["data_puts"], _live_references()
    _run(engine, _module(), clients, rounds=3, setup=False)
    assert engine.stats["data_puts"] == puts <= NUM_CLIENTS
    assert _live_references() == refs


def test_a_raising_client_is_dropped_and_the_round_goes_on(engine: RayEngine, clients: list[TensorData]) -> None:
    def broken(inputs: Tensor, targets: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        raise ValueError("corrupt batch")

    with pytest.warns(RuntimeWarning, match="client 3 failed.*ValueError: corrupt batch"):
        locals_, outcomes = _run(engine, _module(), clients, rounds=1, poisoners={3: broken}, setup=False)
    (outcome,) = [o for o in outcomes[0] if not o.ok]
    assert outcome.client_id == 3 and "corrupt batch" in outcome.error
    assert torch.isfinite(locals_[0][[0, 1, 2, 4]]).all()
    assert engine.stats["actors_replaced"] == 0  # the actor caught it and stays in the pool


def test_a_dead_worker_is_replaced(engine: RayEngine, clients: list[TensorData]) -> None:
    def crash(inputs: Tensor, targets: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        os._exit(1)  # the actor's process dies, as on a lost node

    before = engine.stats["actors_replaced"]
    with pytest.warns(RuntimeWarning, match="client 1 failed.*worker died"):
        _, outcomes = _run(engine, _module(), clients, rounds=1, poisoners={1: crash}, setup=False)
    assert [o.client_id for o in outcomes[0] if not o.ok] == [1]
    assert engine.stats["actors_replaced"] == before + 1
    _, outcomes = _run(engine, _module(), clients, rounds=1, setup=False)  # the survivor and the newcomer
    assert all(o.ok for o in outcomes[0])


def test_a_client_past_the_timeout_is_dropped(engine: RayEngine, clients: list[TensorData]) -> None:
    def stall(inputs: Tensor, targets: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        time.sleep(120)
        return inputs, targets

    engine.client_timeout_s = 2.0
    try:
        started = time.perf_counter()
        with pytest.warns(RuntimeWarning, match="client 4 failed.*timed out after 2.0 s"):
            _, outcomes = _run(engine, _module(), clients, rounds=1, poisoners={4: stall}, setup=False)
        assert time.perf_counter() - started < 100  # the stalled actor was killed, not awaited
    finally:
        engine.client_timeout_s = None
    assert [o.client_id for o in outcomes[0] if not o.ok] == [4]


def test_trainer_with_ray_engine_matches_sequential(engine: RayEngine, tmp_path) -> None:
    def fit(engine: str | Engine) -> tuple[Tensor, list]:
        trainer = make_trainer(tmp_path / str(engine)[:9], engine=engine, rounds=2, clients_per_round=3,
                               checkpoint_every=0, seed_everything=True)
        module = TinyNet(hidden=8)  # built after a trainer that seeds the global generators: same init
        trainer.fit(module, datamodule=make_dm(num_clients=4))
        return flat_params(module), metrics_without_time(trainer.history)

    with torch_threads(1):
        want_params, want_metrics = fit("sequential")
        started = engine.stats["actors_started"]
        have_params, have_metrics = fit(engine)  # set up again: its warm actors get the trainer's module
    assert torch.equal(want_params, have_params)
    assert want_metrics == have_metrics
    assert engine.stats["actors_started"] - started <= 1  # at most a replacement still owed by a test above
    assert ray.is_initialized()  # fit() tore the engine down, but Ray was not the engine's to stop


def test_a_free_actor_takes_a_client_it_trained_before(clients: list[TensorData]) -> None:
    engine, actor_a, actor_b = RayEngine(), object(), object()
    tasks = _tasks(clients, 0)
    engine._affinity = {3: actor_a, 1: actor_b}
    pending = deque(range(len(tasks)))
    assert engine._next_row(pending, tasks, actor_a) == 3
    assert engine._next_row(pending, tasks, actor_a) == 0  # none left that it knows: the first waiting
    assert engine._next_row(pending, tasks, actor_b) == 1
    assert list(pending) == [2, 4]


def test_engine_by_name_and_argument_checks() -> None:
    assert isinstance(get_engine("ray"), RayEngine)
    with pytest.raises(ValueError, match="client_timeout_s must be a finite number > 0"):
        RayEngine(client_timeout_s=0)
    with pytest.raises(ValueError, match="max_concurrency must be an int >= 1"):
        RayEngine(max_concurrency=0)
    with pytest.raises(RuntimeError, match="before setup"):
        RayEngine().train_round(torch.zeros(1), torch.zeros(0), [], torch.zeros(0, 1), torch.zeros(0, 0))


def _live_references() -> int:
    """Object references the driver still holds (Ray's own counter; the engine must not leak any)."""
    gc.collect()  # references held by garbage cycles (e.g. a caught exception's frames) are not leaks
    worker = ray._private.worker.global_worker
    return len(worker.core_worker.get_all_reference_counts())


class _WidensOnTrainStart(TinyNet):
    """Swaps its output layer for a wider one when a client's training starts (the model must not change)."""

    def on_train_start(self) -> None:
        self.net[-1] = torch.nn.Linear(8, 6)


def test_a_worker_whose_module_changes_drops_the_client_and_repairs_it(engine: RayEngine,
                                                                       clients: list[TensorData]) -> None:
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        torch.manual_seed(0)
        _, outcomes = _run(engine, _WidensOnTrainStart(hidden=8), clients[:2], rounds=2)
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    for outcome in (o for round_outcomes in outcomes for o in round_outcomes):
        assert not outcome.ok and "on_train_start changed the module's tensors" in outcome.error, outcome.error
        hook, difference = outcome.extras["layout_change"]
        assert hook == "on_train_start" and "resized 'net.3.weight'" in difference


def test_a_ray_fit_leaves_the_drivers_global_generator_alone(engine: RayEngine, tmp_path) -> None:
    # the shared engine: a second pool would wait for the CPUs the first one's actors hold
    module, dm = _module(), make_dm(num_clients=3, dataset=Blobs(num_train=90))
    torch.manual_seed(7)
    before = torch.get_rng_state()
    trainer = make_trainer(tmp_path, rounds=1, engine=engine, seed_everything=False)
    trainer.fit(module, dm)
    assert torch.equal(torch.get_rng_state(), before)
