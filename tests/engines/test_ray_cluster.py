"""RayEngine on a two-node Ray cluster (two raylets on 127.0.0.1): spread, bit-identical, survives a lost node.

Both nodes are started with ``ray start --block`` in their own sessions, one CPU and a small object
store each, every port chosen free; the fixture kills both process trees however the tests end.
(It does not call ``ray stop --force``: that stops every Ray on the machine, other users' included.)

Addresses: the nodes are started with ``--node-ip-address=127.0.0.1``, but on Linux Ray replaces a
loopback address by the machine's own interface address for a multi-node cluster (and refuses a
second node otherwise), so the raylets talk over this machine's own IP; no other host is involved.
"""
from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import ray
import torch
from torch import Tensor

from fl_lightning.context import LocalConfig
from fl_lightning.data.base import TensorData
from fl_lightning.engines import ClientTask, SequentialEngine
from fl_lightning.engines.base import torch_threads
from fl_lightning.engines.ray import RayEngine
from fl_lightning.param_layout import ParamLayout, flatten, module_tensors
from tests import helpers
from tests.helpers import Blobs, TinyNet, make_dm
from tests.integrations.local_processes import ProcessGroup, free_port, wait_for_port

NUM_CLIENTS = 6
OBJECT_STORE_BYTES = 80 * 1024 * 1024  # Ray's minimum is 75 MiB


class _Cluster:
    """Addresses of the two-node cluster and the handle to kill its second node."""

    def __init__(self, group: ProcessGroup, address: str, worker_manager_port: int) -> None:
        self.group, self.address, self.worker_manager_port = group, address, worker_manager_port

    def node_ids(self) -> tuple[str, str]:
        """(head node id, second node id), told apart by the second node's manager port."""
        alive = [n for n in ray.nodes() if n["Alive"]]
        second = [n["NodeID"] for n in alive if n["NodeManagerPort"] == self.worker_manager_port]
        head = [n["NodeID"] for n in alive if n["NodeManagerPort"] != self.worker_manager_port]
        assert len(second) == 1 and len(head) == 1, alive
        return head[0], second[0]

    def kill_second_node(self) -> None:
        """SIGKILL the second node's `ray start`, raylet and workers, as a machine that goes away."""
        second = self.group.processes[1]
        from tests.integrations.local_processes import descendants

        for pid in [second.pid, *descendants(second.pid)]:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass


def _ports(*names: str) -> list[str]:
    return [f"--{name}={free_port()}" for name in names]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Cluster]:
    """A head node and a second node, one CPU each, on 127.0.0.1; the driver connected to the head."""
    assert not ray.is_initialized()
    logs = tmp_path_factory.mktemp("ray-cluster")
    temp_dir = Path(f"/tmp/ray-fl-{os.getpid()}")  # short: Ray's socket paths must stay under 108 bytes
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(sys.path))
    group = ProcessGroup(logs, env)
    gcs_port, worker_manager_port = free_port(), free_port()

    def node_args() -> list[str]:  # every node its own free ports
        return ["--num-cpus=1", f"--object-store-memory={OBJECT_STORE_BYTES}", "--block", "--disable-usage-stats",
                f"--temp-dir={temp_dir}", "--node-ip-address=127.0.0.1",
                *_ports("object-manager-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                        "metrics-export-port", "runtime-env-agent-port")]

    ray.cloudpickle.register_pickle_by_value(helpers)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        head = group.start("head", ["ray", "start", "--head", f"--port={gcs_port}", "--include-dashboard=false",
                                    *_ports("ray-client-server-port", "node-manager-port"), *node_args()])
        wait_for_port(gcs_port, timeout_s=120, process=head)
        address = f"127.0.0.1:{gcs_port}"
        group.start("second", ["ray", "start", f"--address={address}", f"--node-manager-port={worker_manager_port}",
                               *node_args()])
        ray.init(address=address, log_to_driver=False)
        deadline = time.monotonic() + 120
        while len([n for n in ray.nodes() if n["Alive"]]) < 2:
            assert time.monotonic() < deadline, f"the second node never joined:\n{group.log('second')[-3000:]}"
            time.sleep(0.5)
        yield _Cluster(group, address, worker_manager_port)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        group.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        ray.cloudpickle.unregister_pickle_by_value(helpers)


@pytest.fixture(scope="module")
def clients() -> list[TensorData]:
    dm = make_dm(num_clients=NUM_CLIENTS, dataset=Blobs(num_train=240, num_classes=4))
    dm.setup()
    return dm.clients


def _module() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet(hidden=8, batchnorm=True, dropout=0.2)


class StallOnNode:
    """A batch poisoner that, on one node only, says so (a marker file) and then hangs: the node dies meanwhile."""

    def __init__(self, node_id: str, marker: str) -> None:
        self.node_id, self.marker = node_id, marker

    def __call__(self, inputs: Tensor, targets: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        if ray.get_runtime_context().get_node_id() == self.node_id:
            Path(self.marker).touch()
            time.sleep(300)
        return inputs, targets


def _round(engine, module: TinyNet, clients: list[TensorData], params: Tensor, buffers: Tensor, round_idx: int,
           poisoner=None):
    layout = ParamLayout.from_module(module)
    tasks = [ClientTask(cid, data, LocalConfig(epochs=2, batch_size=16), seed=1000 * round_idx + cid,
                        batch_poisoner=poisoner) for cid, data in enumerate(clients)]
    out_p = torch.full((len(tasks), layout.num_params), float("nan"))
    out_b = torch.full((len(tasks), layout.num_buffers), float("nan"))
    outcomes = engine.train_round(params, buffers, tasks, out_p, out_b)
    return out_p, out_b, outcomes


def _start(module: TinyNet) -> tuple[Tensor, Tensor]:
    layout = ParamLayout.from_module(module)
    return (flatten(module_tensors(module, layout.params, "params")),
            flatten(module_tensors(module, layout.buffers, "buffers")))


def test_clients_spread_over_both_nodes_and_match_the_sequential_engine(cluster: _Cluster,
                                                                         clients: list[TensorData]) -> None:
    engine = RayEngine(address=cluster.address)
    module = _module()
    engine.setup(module, ParamLayout.from_module(module))
    sequential, seq_module = SequentialEngine(num_threads=1), _module()
    sequential.setup(seq_module, ParamLayout.from_module(seq_module))
    try:
        assert engine.warm_up() == 2  # one actor per 1-CPU node
        params, buffers = _start(module)
        used: set[str] = set()
        for r in range(2):
            got_p, got_b, outcomes = _round(engine, module, clients, params, buffers, r)
            with torch_threads(1):
                want_p, want_b, _ = _round(sequential, seq_module, clients, params, buffers, r)
            assert all(o.ok for o in outcomes), [o.error for o in outcomes]
            assert torch.equal(got_p, want_p) and torch.equal(got_b, want_b)  # bit-identical, node by node
            used |= {o.extras["node_id"] for o in outcomes}
            params, buffers = got_p.mean(0), got_b.mean(0)
        assert used == set(cluster.node_ids())
    finally:
        engine.teardown()
    assert ray.is_initialized()  # the cluster was not the engine's to stop


def test_a_node_killed_mid_round_drops_its_clients_and_the_next_round_runs_on_the_survivor(
        cluster: _Cluster, clients: list[TensorData], tmp_path: Path) -> None:
    head_id, second_id = cluster.node_ids()
    engine = RayEngine(address=cluster.address, client_timeout_s=240)
    module = _module()
    engine.setup(module, ParamLayout.from_module(module))
    marker = tmp_path / "second-node-is-training"
    killed = threading.Event()

    def kill_when_training() -> None:
        deadline = time.monotonic() + 240
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        cluster.kill_second_node()
        killed.set()

    killer = threading.Thread(target=kill_when_training, daemon=True)
    try:
        assert engine.warm_up() == 2
        params, buffers = _start(module)
        killer.start()
        with pytest.warns(RuntimeWarning, match="worker died"):
            _, _, outcomes = _round(engine, module, clients, params, buffers, 0, StallOnNode(second_id, str(marker)))
        assert killed.is_set() and marker.exists()
        dropped = [o for o in outcomes if not o.ok]
        assert len(dropped) == 1 and "worker died" in dropped[0].error  # the client on the lost node
        assert {o.extras["node_id"] for o in outcomes if o.ok} == {head_id}
        assert len(outcomes) - len(dropped) == NUM_CLIENTS - 1  # the survivor trained everyone else

        _, _, outcomes = _round(engine, module, clients, params, buffers, 1)
        assert all(o.ok for o in outcomes), [o.error for o in outcomes]
        assert {o.extras["node_id"] for o in outcomes} == {head_id}
    finally:
        engine.teardown()
        killer.join(timeout=1)
