"""The two-node Ray cluster scenario of ``test_ray_cluster.py``, run inside a network namespace that has only ``lo``.

    unshare --net --pid --fork --kill-child --mount-proc -- sh -c 'ip link set lo up && exec "$@"' sh \\
        python -m tests.engines.ray_cluster_scenario OUT_DIR RAY_TEMP_DIR

(``tests.integrations.local_processes.in_private_network`` builds that command.) It starts a head node
and a second node (``ray start --block``, one CPU each), connects a driver, trains two rounds with
RayEngine, then kills the second node mid-round and trains one more round; it writes what happened to
``OUT_DIR/results.pt`` and the nodes' logs next to it. The test process compares the local models
with SequentialEngine and asserts on the rest.

Loopback by construction: the namespace has no interface but ``lo``, so when Ray replaces
``127.0.0.1`` by "this machine's address" it finds 127.0.0.1 again; the scenario refuses to run if any
other interface exists or if any node reports an address outside 127.0.0.0/8. The namespace has its
own process ids too: when the scenario ends, however it ends, the kernel kills every process in it.
"""
from __future__ import annotations

import os
import socket
import sys
import threading
import time
import traceback
import warnings
from pathlib import Path

import ray
import torch
from torch import Tensor

from fl_lightning.context import LocalConfig
from fl_lightning.data.base import TensorData
from fl_lightning.engines import ClientTask
from fl_lightning.engines.ray import RayEngine
from fl_lightning.param_layout import ParamLayout, flatten, module_tensors
from tests import helpers
from tests.helpers import Blobs, TinyNet, make_dm
from tests.integrations.local_processes import ProcessGroup, descendants, free_port, wait_for_port

NUM_CLIENTS = 6
ROUNDS = 2  # rounds of the spread / bit-identical part
OBJECT_STORE_BYTES = 80 * 1024 * 1024  # Ray's minimum is 75 MiB
STALL_S = 300  # how long the client on the doomed node hangs (it is killed long before)


def make_clients() -> list[TensorData]:
    """The six Blobs clients both the scenario and the test train."""
    dm = make_dm(num_clients=NUM_CLIENTS, dataset=Blobs(num_train=240, num_classes=4))
    dm.setup()
    return dm.clients


def make_module() -> TinyNet:
    """The same initial TinyNet (BatchNorm and dropout: float buffers, int buffers, the global RNG) every time."""
    torch.manual_seed(0)
    return TinyNet(hidden=8, batchnorm=True, dropout=0.2)


def initial_weights(module: TinyNet) -> tuple[Tensor, Tensor]:
    """The module's (params, buffers) as flat vectors."""
    layout = ParamLayout.from_module(module)
    return (flatten(module_tensors(module, layout.params, "params")),
            flatten(module_tensors(module, layout.buffers, "buffers")))


def train_round(engine, module: TinyNet, clients: list[TensorData], params: Tensor, buffers: Tensor, round_idx: int,
                poisoner=None):
    """One round of every client (2 local epochs, batches of 16): (local params, local buffers, outcomes)."""
    layout = ParamLayout.from_module(module)
    tasks = [ClientTask(cid, data, LocalConfig(epochs=2, batch_size=16), seed=1000 * round_idx + cid,
                        batch_poisoner=poisoner) for cid, data in enumerate(clients)]
    out_p = torch.full((len(tasks), layout.num_params), float("nan"))
    out_b = torch.full((len(tasks), layout.num_buffers), float("nan"))
    outcomes = engine.train_round(params, buffers, tasks, out_p, out_b)
    return out_p, out_b, outcomes


class StallOnNode:
    """A batch poisoner that, on one node only, says so (a marker file) and then hangs: the node dies meanwhile."""

    def __init__(self, node_id: str, marker: str) -> None:
        self.node_id, self.marker = node_id, marker

    def __call__(self, inputs: Tensor, targets: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        if ray.get_runtime_context().get_node_id() == self.node_id:
            Path(self.marker).touch()
            time.sleep(STALL_S)
        return inputs, targets


def _outcomes(outcomes) -> dict[str, list]:
    return {"ok": [o.ok for o in outcomes], "errors": [o.error for o in outcomes],
            "node_ids": [o.extras.get("node_id") for o in outcomes]}


def _ports(*names: str) -> list[str]:
    return [f"--{name}={free_port()}" for name in names]


class Cluster:
    """A head node and a second node on 127.0.0.1, one CPU each; :meth:`stop` ends both process trees."""

    def __init__(self, log_dir: Path, temp_dir: Path) -> None:
        env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
        self.group = ProcessGroup(log_dir, env)
        self.temp_dir = temp_dir  # short: Ray's socket paths must stay under 108 bytes
        gcs_port, self.second_manager_port = free_port(), free_port()
        head = self.group.start("head", ["ray", "start", "--head", f"--port={gcs_port}", "--include-dashboard=false",
                                         *_ports("ray-client-server-port", "node-manager-port"), *self._node_args()])
        wait_for_port(gcs_port, timeout_s=120, process=head)
        self.address = f"127.0.0.1:{gcs_port}"
        self.group.start("second", ["ray", "start", f"--address={self.address}",
                                    f"--node-manager-port={self.second_manager_port}", *self._node_args()])

    def _node_args(self) -> list[str]:  # every node its own free ports
        return ["--num-cpus=1", f"--object-store-memory={OBJECT_STORE_BYTES}", "--block", "--disable-usage-stats",
                f"--temp-dir={self.temp_dir}", "--node-ip-address=127.0.0.1",
                *_ports("object-manager-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                        "metrics-export-port", "runtime-env-agent-port")]

    def wait_for_both(self, timeout_s: float = 120) -> None:
        """Block until the driver sees two live nodes."""
        deadline = time.monotonic() + timeout_s
        while len([n for n in ray.nodes() if n["Alive"]]) < 2:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the second node never joined:\n{self.group.log('second')[-3000:]}")
            time.sleep(0.5)

    def node_ids(self) -> tuple[str, str]:
        """(head node id, second node id), told apart by the second node's manager port."""
        alive = [n for n in ray.nodes() if n["Alive"]]
        second = [n["NodeID"] for n in alive if n["NodeManagerPort"] == self.second_manager_port]
        head = [n["NodeID"] for n in alive if n["NodeManagerPort"] != self.second_manager_port]
        if len(second) != 1 or len(head) != 1:
            raise RuntimeError(f"expected one head and one second node, got {alive}")
        return head[0], second[0]

    def kill_second_node(self) -> None:
        """SIGKILL the second node's `ray start`, raylet and workers, as a machine that goes away."""
        second = self.group.processes[1]
        for pid in [second.pid, *descendants(second.pid)]:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        """Stop both nodes (SIGTERM, then SIGKILL) and their process trees."""
        self.group.stop()


def spread_and_match(cluster: Cluster, clients: list[TensorData]) -> dict:
    """Two rounds on the pool of two workers; the weights each round started from and what each client returned."""
    engine = RayEngine(address=cluster.address)
    module = make_module()
    engine.setup(module, ParamLayout.from_module(module))
    try:
        record: dict = {"workers": engine.warm_up(), "rounds": []}
        params, buffers = initial_weights(module)
        for r in range(ROUNDS):
            got_p, got_b, outcomes = train_round(engine, module, clients, params, buffers, r)
            record["rounds"].append({"params_in": params, "buffers_in": buffers, "params": got_p, "buffers": got_b,
                                     **_outcomes(outcomes)})
            params, buffers = got_p.mean(0), got_b.mean(0)
    finally:
        engine.teardown()
    record["driver_still_connected"] = ray.is_initialized()  # the cluster was not the engine's to stop
    return record


def lose_a_node(cluster: Cluster, clients: list[TensorData], marker: Path) -> dict:
    """A round during which the second node is SIGKILLed while it trains a client, then one more round."""
    _, second_id = cluster.node_ids()
    engine = RayEngine(address=cluster.address, client_timeout_s=240)
    module = make_module()
    engine.setup(module, ParamLayout.from_module(module))
    killed = threading.Event()

    def kill_when_training() -> None:
        deadline = time.monotonic() + 240
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        cluster.kill_second_node()
        killed.set()

    killer = threading.Thread(target=kill_when_training, daemon=True)
    try:
        record: dict = {"workers": engine.warm_up()}
        params, buffers = initial_weights(module)
        killer.start()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _, _, outcomes = train_round(engine, module, clients, params, buffers, 0, StallOnNode(second_id, str(marker)))
        record["warnings"] = [f"{w.category.__name__}: {w.message}" for w in caught]
        record["killed"], record["marker_seen"] = killed.is_set(), marker.exists()
        record["round_with_kill"] = _outcomes(outcomes)
        _, _, outcomes = train_round(engine, module, clients, params, buffers, 1)
        record["round_after"] = _outcomes(outcomes)
    finally:
        engine.teardown()
        killer.join(timeout=1)
    return record


def main(out_dir: Path, temp_dir: Path) -> None:
    """Run the scenario and write ``out_dir/results.pt`` (``error``: a traceback, if it failed)."""
    results: dict = {"interfaces": [name for _, name in socket.if_nameindex()]}
    if results["interfaces"] != ["lo"]:
        raise SystemExit(f"refusing to start Ray: interfaces other than lo exist here: {results['interfaces']}")
    ray.cloudpickle.register_pickle_by_value(helpers)
    cluster = None
    try:
        clients = make_clients()
        results["client_data"] = [(c.inputs, c.targets) for c in clients]
        started = time.monotonic()
        cluster = Cluster(out_dir, temp_dir)
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_both()
        results["start_s"] = time.monotonic() - started
        results["node_addresses"] = sorted({n["NodeManagerAddress"] for n in ray.nodes()})
        if any(not a.startswith("127.") for a in results["node_addresses"]):
            raise RuntimeError(f"a Ray node left loopback: {results['node_addresses']}")
        results["head_id"], results["second_id"] = cluster.node_ids()
        started = time.monotonic()
        results["spread"] = spread_and_match(cluster, clients)
        results["spread_s"] = time.monotonic() - started
        started = time.monotonic()
        results["lost_node"] = lose_a_node(cluster, clients, out_dir / "second-node-is-training")
        results["lost_node_s"] = time.monotonic() - started
    except Exception:
        results["error"] = traceback.format_exc()
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if cluster is not None:
            cluster.stop()
        torch.save(results, out_dir / "results.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
