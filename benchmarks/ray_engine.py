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

    python benchmarks/ray_engine.py                      # ~5 min on a quiet 2-core machine
    python benchmarks/ray_engine.py --timing-rounds 2 --memory-rounds 5   # smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timing-rounds", type=int, default=5, help="timed rounds per engine (after 1 warm-up)")
    parser.add_argument("--memory-rounds", type=int, default=50, help="rounds of the memory run")
    parser.add_argument("--epochs", type=int, default=5, help="local epochs per client")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)

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


if __name__ == "__main__":
    main()
