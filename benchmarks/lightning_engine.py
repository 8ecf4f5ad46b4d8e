"""Per-client cost of LightningEngine (a lightning.Trainer per client) against SequentialEngine (the lean loop).

Prints one JSON object. PaperCNN on MNIST-shaped random images, clients of 40 and of 600 samples,
1 local epoch, batch 128. The two engines run interleaved round by round in one process (one
warm-up round each first), so every ratio compares rounds measured side by side on a shared machine.

    python benchmarks/lightning_engine.py
    python benchmarks/lightning_engine.py --rounds 9 --threads 1 --sizes 40 600 --clients 20 5
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time


def make_tasks(num_clients: int, samples: int, epochs: int, batch_size: int) -> list:
    """``num_clients`` tasks of ``samples`` MNIST-shaped random images each, with 10 random labels."""
    import torch

    from fl_lightning.context import LocalConfig
    from fl_lightning.data.base import TensorData
    from fl_lightning.engines import ClientTask

    g = torch.Generator().manual_seed(samples)
    return [ClientTask(k, TensorData(torch.randn(samples, 1, 28, 28, generator=g),
                                     torch.randint(0, 10, (samples,), generator=g)),
                       LocalConfig(epochs=epochs, batch_size=batch_size), seed=1000 + k)
            for k in range(num_clients)]


class EngineRound:
    """One engine bound to its own PaperCNN (same initial weights for both engines)."""

    def __init__(self, engine: object, tasks: list) -> None:
        import torch

        from fl_lightning.param_layout import ParamLayout, flatten, module_tensors
        from fl_lightning.models import PaperCNN

        torch.manual_seed(0)
        module = PaperCNN(lr=0.01, momentum=0.5)
        layout = ParamLayout.from_module(module)
        self.engine, self.tasks = engine, tasks
        self.global_params = flatten(module_tensors(module, layout.params, "params"))
        self.global_buffers = torch.zeros(0)
        self.out_params = torch.empty(len(tasks), layout.num_params)
        self.out_buffers = torch.empty(len(tasks), 0)
        engine.setup(module, layout)

    def __call__(self) -> float:
        """Seconds per client of one round."""
        started = time.perf_counter()
        outcomes = self.engine.train_round(self.global_params, self.global_buffers, self.tasks,
                                           self.out_params, self.out_buffers)
        assert all(o.ok for o in outcomes), [o.error for o in outcomes]
        return (time.perf_counter() - started) / len(self.tasks)


def measure(samples: int, num_clients: int, rounds: int, epochs: int, batch_size: int) -> dict:
    """Interleaved rounds of both engines on the same clients: per-client medians and their differences."""
    from fl_lightning.engines import LightningEngine, SequentialEngine

    tasks = make_tasks(num_clients, samples, epochs, batch_size)
    runs = {"sequential": EngineRound(SequentialEngine(), tasks), "lightning": EngineRound(LightningEngine(), tasks)}
    for run in runs.values():  # warm-up: first-call allocations and Lightning's lazy imports
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            times[name].append(run())
    ratios = [lit / seq for lit, seq in zip(times["lightning"], times["sequential"])]
    extra = [lit - seq for lit, seq in zip(times["lightning"], times["sequential"])]
    diff = (runs["lightning"].out_params - runs["sequential"].out_params).abs().max().item()
    return {
        "samples_per_client": samples, "clients": num_clients, "rounds": rounds,
        "sequential_ms_per_client": round(1000 * statistics.median(times["sequential"]), 2),
        "lightning_ms_per_client": round(1000 * statistics.median(times["lightning"]), 2),
        "overhead_ms_per_client": round(1000 * statistics.median(extra), 2),
        "overhead_ms_per_client_min_max": [round(1000 * min(extra), 2), round(1000 * max(extra), 2)],
        "lightning_over_sequential": round(statistics.median(ratios), 2),
        "max_abs_diff_of_client_models": diff,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[40, 600], help="samples per client")
    parser.add_argument("--clients", type=int, nargs="+", default=[20, 5], help="clients per round, one per size")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per engine (after one warm-up)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    if len(args.clients) != len(args.sizes):
        parser.error("--clients needs one count per --sizes entry")
    import torch
    import lightning

    torch.set_num_threads(args.threads)
    results = [measure(s, k, args.rounds, args.epochs, args.batch_size) for s, k in zip(args.sizes, args.clients)]
    print(json.dumps({
        "benchmark": "lightning_engine", "model": "PaperCNN", "data": "MNIST-shaped random images",
        "epochs": args.epochs, "batch_size": args.batch_size, "torch_threads": args.threads,
        "torch": torch.__version__, "lightning": lightning.__version__, "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(), "load_average": [round(x, 2) for x in os.getloadavg()],
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
