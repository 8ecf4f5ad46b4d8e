"""RayEngine on one machine: round time with 1 and 2 workers vs the sequential engine, and memory over many rounds.

Prints one JSON object. Workload: PaperCNN, MNIST5k over 100 clients ("classes" partition, seed 0),
every client trained every round (quickstart settings: 5 local epochs, batches of 128). The three
engines run interleaved round by round in one process, since the machine may be shared: every
ratio compares rounds measured side by side. Ray is started with 3 logical CPUs so that the 1-worker
and the 2-worker pools exist at once; at most 2 actors train at any moment.

A round with 0 local epochs gives each engine's cost per client apart from training (loading the
global model, shipping the task, returning and copying the local model).

Then ``--memory-rounds`` rounds on the 2-worker pool record the driver's and each worker's resident
memory and the driver's live object references (all must stay flat: nothing is kept per round).

This single-node Ray runs with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (set before Ray is imported):
without it Ray on Linux gives its local node the machine's interface address, not 127.0.0.1; with it
every Ray process listens and connects on 127.0.0.1 (checked after ``ray.init``).

    python benchmarks/ray_engine.py                      # ~5 min on a quiet 2-core machine
    python benchmarks/ray_engine.py --timing-rounds 2 --memory-rounds 5   # smoke run

``--data-move`` measures instead what a client costs the first time it trains on a node that has
not trained it before: a two-node Ray cluster is started on this machine (two raylets, one CPU
each, ``ray start --block`` on free loopback ports, killed at the end), the driver puts a client's
data on the head node, and a worker pinned to the second node trains it with 0 local epochs
twice: the first call pulls the data across (object-store transfer between the raylets), the
second reads the node's copy. Their difference is the cost of moving the data, once per client and
node; the same pair on the head node (no move) is the control.

The ``--data-move`` run stays on loopback by construction: for a cluster Ray replaces 127.0.0.1 by
the machine's own address, so the script re-runs itself inside new network and pid namespaces
(``unshare --net --pid --fork --kill-child --mount-proc``, then ``ip link set lo up``) where ``lo`` is
the only interface: Ray's "own address" is 127.0.0.1 there, nothing can reach another address, and
every Ray process dies with the namespace. That needs root, util-linux ``unshare`` and iproute2
``ip``; without them the script stops with an error instead of running on the machine's network.
(Where ``lo`` is already the only interface, it runs as it is.)

    python benchmarks/ray_engine.py --data-move                           # ~2 min
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import warnings

# run a command in new network (only ``lo``, brought up) and pid namespaces; see the module docstring
PRIVATE_NETWORK = ["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc", "--",
                   "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
# Ray's switch for multi-node clusters: "0" makes a local Ray use 127.0.0.1 but refuses a second node
CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timing-rounds", type=int, default=5, help="timed rounds per engine (after 1 warm-up)")
    parser.add_argument("--memory-rounds", type=int, default=50, help="rounds of the memory run")
    parser.add_argument("--epochs", type=int, default=5, help="local epochs per client")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--data-move", action="store_true", help="measure moving a client's data to a new node")
    parser.add_argument("--repeats", type=int, default=7, help="clients per data size (--data-move)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    if args.data_move:
        if _interfaces() != ["lo"]:
            sys.exit(_rerun_in_private_network())
        data_move(args.repeats)
        return

    os.environ[CLUSTER_SWITCH] = "0"  # read when Ray is imported: a local Ray on 127.0.0.1, not the machine's IP
    import ray
    import torch

    from fl_lightning.context import LocalConfig
    from fl_lightning.data import FederatedDataModule, MNIST5k
    from fl_lightning.engines import ClientTask, SequentialEngine
    from fl_lightning.engines.ray import RayEngine, _rss_bytes
    from fl_lightning.param_layout import ParamLayout, flatten, module_tensors
    from fl_lightning.models import PaperCNN

    dm = FederatedDataModule(MNIST5k(), 100, "classes", seed=0)
    dm.setup()
    torch.manual_seed(0)
    module = PaperCNN(lr=0.05, momentum=0.5)
    layout = ParamLayout.from_module(module)
    params0 = flatten(module_tensors(module, layout.params, "params"))
    buffers0 = flatten(module_tensors(module, layout.buffers, "buffers"))
    k = len(dm.clients)
    out_p, out_b = torch.empty(k, layout.num_params), torch.empty(k, layout.num_buffers)

    def tasks(round_idx: int, epochs: int) -> list[ClientTask]:
        cfg = LocalConfig(epochs=epochs, batch_size=args.batch_size)
        return [ClientTask(cid, data, cfg, seed=1000 * round_idx + cid) for cid, data in enumerate(dm.clients)]

    def one_round(engine, params, round_idx: int, epochs: int = args.epochs) -> tuple[float, torch.Tensor]:
        started = time.perf_counter()
        outcomes = engine.train_round(params, buffers0, tasks(round_idx, epochs), out_p, out_b)
        seconds = time.perf_counter() - started
        assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
        return seconds, out_p.mean(0)  # FedAvg of equal-size clients: the next global model

    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    _check_loopback(ray.nodes())
    startup = {}
    engines = {"sequential": SequentialEngine()}
    for name, workers in (("ray_1_worker", 1), ("ray_2_workers", 2)):
        engines[name] = RayEngine(max_concurrency=workers)
    for name, engine in engines.items():
        started = time.perf_counter()
        engine.setup(module, layout)
        if isinstance(engine, RayEngine):
            engine.warm_up()
        startup[name] = round(time.perf_counter() - started, 2)

    # -- round time, interleaved ------------------------------------------------------------------
    threads = torch.get_num_threads()
    times: dict[str, list[float]] = {"sequential_1_thread": [], f"sequential_{threads}_threads": [],
                                     "ray_1_worker": [], "ray_2_workers": []}
    params = {name: params0.clone() for name in times}
    for r in range(args.timing_rounds + 1):
        for name in times:
            engine = engines["sequential" if name.startswith("sequential") else name]
            torch.set_num_threads(1 if name == "sequential_1_thread" else threads)
            seconds, params[name] = one_round(engine, params[name], r)
            if r > 0:  # round 0 warms caches (and puts every client's data for the Ray engines)
                times[name].append(seconds)
    same = {name: bool(torch.equal(params["sequential_1_thread"], params[name])) for name in params}
    # the cost of a client apart from training: load the global model, (ship,) flatten, (return,) copy
    overhead: dict[str, list[float]] = {"sequential_1_thread": [], "ray_1_worker": [], "ray_2_workers": []}
    torch.set_num_threads(1)
    for r in range(4):
        for name in overhead:
            seconds, _ = one_round(engines["sequential" if name.startswith("sequential") else name], params0, r, 0)
            if r > 0:
                overhead[name].append(seconds)
    torch.set_num_threads(threads)
    engines["ray_1_worker"].teardown()

    # -- memory over many rounds on the 2-worker pool --------------------------------------------
    ray2 = engines["ray_2_workers"]
    live_refs = ray._private.worker.global_worker.core_worker.get_all_reference_counts
    mb = 1 / 2**20
    memory = {"round": [], "driver_rss_mb": [], "worker_rss_mb": [], "driver_live_refs": []}
    p = params0.clone()
    every = max(1, args.memory_rounds // 10)
    for r in range(args.memory_rounds):
        _, p = one_round(ray2, p, r)
        if r % every == 0 or r == args.memory_rounds - 1:
            memory["round"].append(r)
            memory["driver_rss_mb"].append(round(_rss_bytes() * mb, 1))
            memory["worker_rss_mb"].append([round(v * mb, 1) for v in ray2.worker_rss_bytes().values()])
            memory["driver_live_refs"].append(len(live_refs()))
    stats = dict(ray2.stats)
    ray2.teardown()
    ray.shutdown()

    def summary(values: list[float]) -> dict:
        return {"median_s": round(statistics.median(values), 3), "min_s": round(min(values), 3),
                "clients_per_s": round(k / statistics.median(values), 1)}

    print(json.dumps({
        "workload": {"model": "PaperCNN", "params": layout.num_params, "data": "MNIST5k", "clients": k,
                     "partition": "classes", "local_epochs": args.epochs, "batch_size": args.batch_size},
        "machine": {"cpus": os.cpu_count(), "load_avg_1min_at_end": round(os.getloadavg()[0], 2),
                    "python": platform.python_version(), "torch": torch.__version__, "ray": ray.__version__},
        "startup_s": startup,
        "round": {name: summary(values) for name, values in times.items()},
        "per_client_overhead_ms": {name: round(1000 * statistics.median(v) / k, 2) for name, v in overhead.items()},
        "speedup_2_vs_1_worker": round(statistics.median(times["ray_1_worker"])
                                       / statistics.median(times["ray_2_workers"]), 2),
        "bit_identical_to_sequential_1_thread": same,
        "memory": memory,
        "memory_rounds": args.memory_rounds,
        "ray_engine_stats": stats,
    }, indent=1))


def _interfaces() -> list[str]:
    """The names of this network namespace's interfaces."""
    return [name for _, name in socket.if_nameindex()]


def _rerun_in_private_network() -> int:
    """Run this script again, same arguments, inside :data:`PRIVATE_NETWORK`; its exit status."""
    command = [*PRIVATE_NETWORK, sys.executable, os.path.abspath(__file__), *sys.argv[1:]]
    try:
        probe = subprocess.run([*PRIVATE_NETWORK, "true"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        probe = subprocess.CompletedProcess([], 1, "", str(error))
    if probe.returncode != 0:
        print("--data-move needs a private network namespace (root + util-linux unshare + iproute2 ip) so that "
              f"Ray stays on loopback; `unshare` said: {probe.stderr.strip()}", file=sys.stderr)
        return 2
    return subprocess.run(command, env=dict(os.environ, **{CLUSTER_SWITCH: "1"})).returncode  # 2 nodes


def _check_loopback(nodes: list[dict]) -> None:
    """Stop the benchmark if a Ray node reports an address outside 127.0.0.0/8."""
    addresses = sorted({n["NodeManagerAddress"] for n in nodes})
    if any(not a.startswith("127.") for a in addresses):
        raise RuntimeError(f"a Ray node left loopback: {addresses}")


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_two_node_cluster(log_dir: str) -> tuple[str, list, int]:
    """``ray start --block`` twice (head, second node); returns address, processes, second node's port.

    Both nodes keep their sessions under ``log_dir/ray`` (``--temp-dir``), not ``/tmp/ray``: a
    killed ``ray start --head`` would leave ``/tmp/ray/ray_current_cluster`` behind, and every
    later ``ray.init()`` on the machine would try to join the dead cluster.
    """
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path),
               **{CLUSTER_SWITCH: "1"})  # a second node; only lo exists here, so still 127.0.0.1
    gcs, second_port = _free_port(), _free_port()
    temp_dir = os.path.join(log_dir, "ray")  # short enough for Ray's socket paths (under 108 bytes)

    def node(extra: list[str], name: str) -> subprocess.Popen:
        ports = [f"--{n}={_free_port()}" for n in ("object-manager-port", "dashboard-agent-listen-port",
                                                   "dashboard-agent-grpc-port", "metrics-export-port",
                                                   "runtime-env-agent-port")]
        args = ["ray", "start", "--block", "--num-cpus=1", f"--object-store-memory={200 * 2**20}",
                "--node-ip-address=127.0.0.1", "--disable-usage-stats", f"--temp-dir={temp_dir}", *ports, *extra]
        with open(os.path.join(log_dir, f"{name}.log"), "wb") as log:
            return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    head = node(["--head", f"--port={gcs}", "--include-dashboard=false",
                 f"--ray-client-server-port={_free_port()}", f"--node-manager-port={_free_port()}"], "head")
    time.sleep(5)
    second = node([f"--address=127.0.0.1:{gcs}", f"--node-manager-port={second_port}"], "second")
    return f"127.0.0.1:{gcs}", [head, second], second_port


def _stop(processes: list) -> None:
    """SIGKILL each node's process group (the raylet, its workers) and wait for the ``ray start`` processes."""
    import signal

    for process in processes:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
        except Exception:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def data_move(repeats: int) -> None:
    """Time a worker's first (data pulled from another node) and second (node-local) call per client and size."""
    import tempfile

    os.environ[CLUSTER_SWITCH] = "1"  # two nodes; only lo exists here, so Ray's own address is 127.0.0.1
    import numpy as np
    import ray
    import torch
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from fl_lightning.context import LocalConfig
    from fl_lightning.engines.ray import ClientWorker, _WorkerTask
    from fl_lightning.param_layout import ParamLayout, flatten, module_tensors
    from fl_lightning.models import PaperCNN

    log_dir = tempfile.mkdtemp(prefix="ray-dm-", dir="/tmp")
    address, processes, second_port = _start_two_node_cluster(log_dir)
    try:
        ray.init(address=address, log_to_driver=False)
        deadline = time.monotonic() + 120
        while len([n for n in ray.nodes() if n["Alive"]]) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the second node never joined; logs in {log_dir}")
            time.sleep(0.5)
        _check_loopback(ray.nodes())
        nodes = {("second" if n["NodeManagerPort"] == second_port else "head"): n["NodeID"]
                 for n in ray.nodes() if n["Alive"]}
        torch.manual_seed(0)
        module = PaperCNN(lr=0.05, momentum=0.5)
        layout = ParamLayout.from_module(module)
        module_ref = ray.put(module)
        global_ref = ray.put({"params": flatten(module_tensors(module, layout.params, "params")).numpy(),
                              "buffers": flatten(module_tensors(module, layout.buffers, "buffers")).numpy(),
                              "int_buffers": []})
        workers = {where: ray.remote(ClientWorker).options(
            num_cpus=1, scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote(
                module_ref, layout, 1) for where, node_id in nodes.items()}
        ray.get([w.ready.remote() for w in workers.values()])
        task = _WorkerTask(0, LocalConfig(epochs=0, batch_size=128), 0, None)
        rng = np.random.default_rng(0)
        results = {}
        for samples in (40, 600, 6000):  # an MNIST5k client, an MNIST client of 100, one of 10
            timings: dict[str, dict[str, list[float]]] = {w: {"first": [], "again": []} for w in workers}
            for _ in range(repeats + 1):
                for where, worker in workers.items():
                    data = ray.put({"inputs": rng.random((samples, 1, 28, 28), dtype=np.float32),
                                    "targets": rng.integers(0, 10, samples)})
                    for call in ("first", "again"):
                        started = time.perf_counter()
                        ray.get(worker.train.remote(global_ref, data, task))
                        timings[where][call].append(time.perf_counter() - started)
                    del data
            results[f"{samples}_samples"] = {
                "data_mb": round(samples * (784 * 4 + 8) / 2**20, 3),
                **{f"{where}_{call}_ms": round(1000 * statistics.median(v[call][1:]), 2)  # drop a warm-up
                   for where, v in timings.items() for call in ("first", "again")},
                "move_cost_ms": round(1000 * (statistics.median(timings["second"]["first"][1:])
                                              - statistics.median(timings["second"]["again"][1:])), 2)}
        for worker in workers.values():
            ray.kill(worker)
        print(json.dumps({"data_move": results, "repeats": repeats,
                          "cluster": "2 raylets on this machine, 1 CPU each, object stores 200 MB, on 127.0.0.1 "
                                     "(a network namespace with only lo)",
                          "machine": {"cpus": os.cpu_count(), "load_avg_1min_at_end": round(os.getloadavg()[0], 2),
                                      "torch": torch.__version__, "ray": ray.__version__}}, indent=1))
    finally:
        if ray.is_initialized():
            ray.shutdown()
        _stop(processes)
        import shutil

        shutil.rmtree(os.path.join(log_dir, "ray"), ignore_errors=True)  # the logs next to it stay


if __name__ == "__main__":
    main()
