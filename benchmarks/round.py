"""Clients per second of one local-training round: a hand-written PyTorch loop vs SequentialEngine vs VmapEngine.

Prints one JSON object. Timings interleave the three methods round by round in one process (the
machine may be shared, so every ratio compares rounds measured side by side); peak memory and
start-up are measured in a fresh child process per method, since max RSS only ever grows.

    python benchmarks/round.py                 # all workloads
    python benchmarks/round.py --workloads paper_cnn --rounds 9 --threads 1 --epochs 5
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Callable

METHODS = ("hand", "sequential", "vmap")
WORKLOADS = ("paper_cnn", "paper_cnn_10x600", "fasttext", "loan_mlp")


@dataclass
class Workload:
    """A model, its clients' data and the local training settings of one benchmark round."""

    name: str
    module: object
    datas: list
    epochs: int
    batch_size: int


def build(name: str) -> Workload:
    """The benchmark's model and client data for ``name``."""
    import torch

    from fl_lightning.data.base import TensorData

    g = torch.Generator().manual_seed(0)
    if name == "paper_cnn":
        from fl_lightning.data import FederatedDataModule, MNIST5k
        from fl_lightning.models import PaperCNN

        dm = FederatedDataModule(MNIST5k(), 100, "classes", seed=0)
        dm.setup()
        torch.manual_seed(0)
        return Workload(name, PaperCNN(lr=0.01, momentum=0.5), dm.clients, epochs=1, batch_size=128)
    if name == "paper_cnn_10x600":  # fewer, bigger clients: MNIST-shaped synthetic images
        from fl_lightning.models import PaperCNN

        datas = [TensorData(torch.randn(600, 1, 28, 28, generator=g), torch.randint(0, 10, (600,), generator=g))
                 for _ in range(10)]
        torch.manual_seed(0)
        return Workload(name, PaperCNN(lr=0.01, momentum=0.5), datas, epochs=1, batch_size=128)
    if name == "fasttext":
        module = _model("FastText", lambda: _LocalFastText())
        datas = []
        for _ in range(10):  # 600 reviews of 200 token ids, 0-padded tails as AmazonReviews produces
            tokens = torch.randint(1, 25000, (600, 200), generator=g)
            lengths = torch.randint(20, 201, (600, 1), generator=g)
            tokens[torch.arange(200).expand(600, -1) >= lengths] = 0
            datas.append(TensorData(tokens, torch.randint(0, 2, (600,), generator=g)))
        return Workload(name, module, datas, epochs=1, batch_size=128)
    if name == "loan_mlp":
        module = _model("LoanMLP", lambda: _LocalLoanMLP())
        datas = []
        for k in range(50):  # uneven client sizes, like US states
            n = 100 + 13 * k
            datas.append(TensorData(torch.randn(n, 91, generator=g), torch.randint(0, 9, (n,), generator=g)))
        return Workload(name, module, datas, epochs=1, batch_size=128)
    raise ValueError(f"unknown workload {name!r}; choose from {WORKLOADS}")


def _model(attr: str, local: Callable[[], object]) -> object:
    import torch

    import fl_lightning.models as models

    torch.manual_seed(0)
    return getattr(models, attr)() if hasattr(models, attr) else local()


def _LocalFastText():  # noqa: N802 - stand-ins used only if the library's models are missing
    import torch
    from torch import nn

    from fl_lightning.models.base import ClassifierModule

    class FastText(ClassifierModule):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = nn.EmbeddingBag(25000, 100, mode="mean", padding_idx=0)
            self.fc = nn.Linear(100, 1)

        def forward(self, tokens):
            return self.fc(self.embedding(tokens))

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=0.05)

    return FastText()


def _LocalLoanMLP():  # noqa: N802
    import torch
    from torch import nn

    from fl_lightning.models.base import ClassifierModule

    class LoanMLP(ClassifierModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(91, 46), nn.ReLU(), nn.Linear(46, 23), nn.ReLU(), nn.Linear(23, 9))

        def forward(self, x):
            return self.net(x)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.5)

    return LoanMLP()


class Round:
    """One method's round over the workload's clients, writing client ``k``'s model to row ``k``."""

    def __init__(self, method: str, work: Workload, vmap_kwargs: dict | None = None) -> None:
        import torch

        from fl_lightning.context import LocalConfig
        from fl_lightning.engines import ClientTask
        from fl_lightning.param_layout import ParamLayout, flatten, module_tensors

        self.method, self.work = method, work
        module = work.module
        self.layout = ParamLayout.from_module(module)
        self.params = module_tensors(module, self.layout.params, "params")
        self.global_params = flatten(self.params)
        self.global_buffers = torch.zeros(0)
        k = len(work.datas)
        self.out_params = torch.empty(k, self.layout.num_params)
        self.out_buffers = torch.empty(k, 0)
        self.tasks = [ClientTask(i, d, LocalConfig(work.epochs, None, work.batch_size), seed=1000 + i)
                      for i, d in enumerate(work.datas)]
        started = time.perf_counter()
        self.engine = None
        if method == "sequential":
            from fl_lightning.engines import SequentialEngine

            self.engine = SequentialEngine()
        elif method == "vmap":
            from fl_lightning.engines.vmap import VmapEngine

            self.engine = VmapEngine(**(vmap_kwargs or {}))
        if self.engine is not None:
            self.engine.setup(module, self.layout)
        self.setup_s = time.perf_counter() - started

    def __call__(self) -> None:
        if self.engine is not None:
            self.engine.train_round(self.global_params, self.global_buffers, self.tasks,
                                    self.out_params, self.out_buffers)
        else:
            self.hand_loop()

    def hand_loop(self) -> None:
        """What a user would write: load the global weights, fresh optimizer, shuffled batches, step."""
        import torch

        module, params = self.work.module, self.params
        module.train()
        for k, task in enumerate(self.tasks):
            with torch.no_grad():
                offset = 0
                for p in params:
                    p.copy_(self.global_params[offset:offset + p.numel()].view_as(p))
                    offset += p.numel()
            optimizer = module.configure_optimizers()
            generator = torch.Generator().manual_seed(task.seed)
            data, n, bs = task.data, len(task.data), task.config.batch_size
            for _ in range(task.config.epochs):
                order = torch.randperm(n, generator=generator)
                for start in range(0, n, bs):
                    index = order[start:start + bs]
                    loss = module.loss(module(data.inputs[index]), data.targets[index])
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
            with torch.no_grad():
                torch.cat([p.reshape(-1) for p in params], out=self.out_params[k])


def reset_peak_rss() -> bool:
    """Restart VmHWM at the current RSS (Linux: write 5 to /proc/self/clear_refs); False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def rss_mb() -> tuple[float, float]:
    """(current VmRSS, peak VmHWM) of this process in MiB."""
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, amount = line.split(":")
                values[key] = int(amount.split()[0]) / 1024
    return values.get("VmRSS", float("nan")), values.get("VmHWM", float("nan"))


def child(workload: str, method: str, rounds: int, threads: int | None, vmap_kwargs: dict,
          epochs: int | None = None) -> dict:
    """In a fresh process: import time, setup time, first-round time and peak RSS of one method."""
    started = time.perf_counter()
    import torch

    import fl_lightning  # noqa: F401
    import fl_lightning.engines  # noqa: F401

    if threads:
        torch.set_num_threads(threads)
    import_s = time.perf_counter() - started
    work = build(workload)
    work.epochs = epochs or work.epochs
    after_data_mb, load_peak_mb = rss_mb()
    peak_reset = reset_peak_rss()  # MNIST5k's CSV parsing peaks above training: measure training alone
    runner = Round(method, work, vmap_kwargs)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runner()
    first = time.perf_counter() - t0
    later = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        runner()
        later.append(time.perf_counter() - t0)
    rss, peak = rss_mb()
    engine = runner.engine
    return {"import_s": import_s, "setup_s": runner.setup_s, "first_round_s": first,
            "round_s": statistics.median(later), "startup_overhead_s": runner.setup_s + first - statistics.median(later),
            "rss_after_data_mb": after_data_mb, "peak_while_loading_data_mb": load_peak_mb, "rss_end_mb": rss,
            "max_rss_mb": peak, "max_rss_is_training_only": peak_reset,
            "fallback": getattr(engine, "fallback_reason", None),
            "warnings": sorted({str(w.message)[:160] for w in caught})}


def timed(workload: str, rounds: int, vmap_kwargs: dict, epochs: int | None = None) -> dict:
    """Interleaved round timings of the three methods in this process, plus the equality of their results."""
    import torch

    work = build(workload)
    work.epochs = epochs or work.epochs
    runners = {m: Round(m, work, vmap_kwargs) for m in METHODS}
    for runner in runners.values():  # warm-up (vmap's probe, allocator, lazy imports)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            runner()
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    for _ in range(rounds):
        for m, runner in runners.items():
            t0 = time.perf_counter()
            runner()
            times[m].append(time.perf_counter() - t0)
    k = len(work.datas)
    seq, vm = runners["sequential"].out_params, runners["vmap"].out_params
    vmap_engine = runners["vmap"].engine
    samples = [len(d) for d in work.datas]
    result = {
        "clients": k, "samples_per_client": {"min": min(samples), "mean": sum(samples) / k, "max": max(samples)},
        "epochs": work.epochs, "batch_size": work.batch_size, "params": runners["hand"].layout.num_params,
        "vmap_fallback": vmap_engine.fallback_reason,
        "max_abs_diff_sequential_vs_vmap": float((seq - vm).abs().max()),
        "max_abs_diff_sequential_vs_hand": float((seq - runners["hand"].out_params).abs().max()),
    }
    for m, ts in times.items():
        med = statistics.median(ts)
        result[m] = {"round_s_median": med, "round_s_min": min(ts), "ms_per_client": 1e3 * med / k,
                     "clients_per_s": k / med}
    pair = lambda a, b: statistics.median(x / y for x, y in zip(times[a], times[b]))  # noqa: E731
    result["ratio_sequential_over_hand"] = pair("sequential", "hand")
    result["speedup_vmap_over_sequential"] = pair("sequential", "vmap")
    result["speedup_vmap_over_hand"] = pair("hand", "vmap")
    result["torch_threads"] = torch.get_num_threads()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per method (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--epochs", type=int, default=None, help="local epochs (default: 1)")
    parser.add_argument("--max-group-size", type=int, default=None)
    parser.add_argument("--memory-budget-mb", type=float, default=512)
    parser.add_argument("--no-memory", action="store_true", help="skip the child processes (memory, start-up)")
    parser.add_argument("--child", nargs=2, metavar=("WORKLOAD", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    vmap_kwargs = {"max_group_size": args.max_group_size, "memory_budget_mb": args.memory_budget_mb}
    if args.child:
        print(json.dumps(child(*args.child, rounds=2, threads=args.threads, vmap_kwargs=vmap_kwargs,
                               epochs=args.epochs)))
        return
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    report: dict = {"machine": {"cpus": os.cpu_count(), "load_avg_start": os.getloadavg(),
                                "torch": torch.__version__}, "workloads": {}}
    for name in args.workloads:
        entry = timed(name, args.rounds, vmap_kwargs, args.epochs)
        if not args.no_memory:
            entry["process"] = {}
            for method in METHODS:
                command = [sys.executable, __file__, "--child", name, method,
                           "--memory-budget-mb", str(args.memory_budget_mb)]
                if args.threads:
                    command += ["--threads", str(args.threads)]
                if args.max_group_size:
                    command += ["--max-group-size", str(args.max_group_size)]
                if args.epochs:
                    command += ["--epochs", str(args.epochs)]
                out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
                entry["process"][method] = json.loads(out.strip().splitlines()[-1])
            hand_mb = entry["process"]["hand"]["max_rss_mb"]
            entry["memory_ratio_vs_hand"] = {m: entry["process"][m]["max_rss_mb"] / hand_mb for m in METHODS}
        report["workloads"][name] = entry
        print(json.dumps({name: entry}), file=sys.stderr)  # progress
    report["machine"]["load_avg_end"] = os.getloadavg()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
