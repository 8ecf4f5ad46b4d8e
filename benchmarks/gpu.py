"""GPU against CPU: the same fits agree, and how much faster the GPU trains and aggregates.

Prints one JSON object with three parts:

* ``agreement``: a few rounds of PaperCNN on MNIST-shaped synthetic data with the sequential and the
  vmap engine, once with ``accelerator="cpu"`` and once with ``accelerator="cuda"``; the largest
  difference of the final global models (float tolerance: cuDNN's convolutions sum in another order);
* ``engines``: clients per second of one round of 100 PaperCNN clients x 40 samples on the GPU,
  sequential vs vmap (target: vmap at least 5x the sequential engine);
* ``residual_reweight``: seconds of ``residual_reweight`` on a ``[100, 11.2M]`` update matrix on the GPU;
* ``aggregators``: every aggregation rule and pre-aggregator once on the GPU and once on the CPU, on the
  same random ``[K, N]`` updates (one row non-finite, one far out), with every round tensor on its
  device as the trainer passes them; the largest difference of the updates and client weights
  (float tolerance: reductions sum in another order) and whether the flagged clients agree. Random
  draws (FLAME's noise, DnC's coordinates, Bucketing's shuffle) are made on the CPU generator either
  way, so they match exactly;
* ``peers``: ``benchmarks/peers.py`` on the GPU: our rules against ByzFL's and ByzPy's GPU paths (both
  run their torch code on CUDA tensors) on the same ``[K, N]`` input, with each result checked against
  ours under the mapped convention; a peer missing or failing on the GPU is reported as such.

Without CUDA it prints a message and exits with status 0 (nothing to measure).

    python benchmarks/gpu.py                       # everything
    python benchmarks/gpu.py --parts agreement --rounds 3
    python benchmarks/gpu.py --parts aggregators --dry-run-on-cpu   # checks the script on a CPU-only machine
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from typing import Any, Callable

PARTS = ("agreement", "engines", "residual_reweight", "aggregators", "peers")


def synthetic_clients(num_clients: int, samples: int, seed: int = 0) -> list:
    """``num_clients`` clients of ``samples`` MNIST-shaped images with random labels (no download)."""
    import torch

    from fl_lightning.data.base import TensorData

    g = torch.Generator().manual_seed(seed)
    return [TensorData(torch.randn(samples, 1, 28, 28, generator=g), torch.randint(0, 10, (samples,), generator=g))
            for _ in range(num_clients)]


def agreement(rounds: int, num_clients: int, samples: int, device: str = "cuda") -> dict[str, Any]:
    """Final global models of CPU and CUDA fits, per engine: the largest absolute and relative difference."""
    import torch
    from torch.utils.data import TensorDataset

    from fl_lightning import FederatedDataModule, FederatedTrainer
    from fl_lightning.models import PaperCNN

    torch.backends.cudnn.deterministic = True
    g = torch.Generator().manual_seed(1)
    n = num_clients * samples
    train = TensorDataset(torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))
    test = TensorDataset(torch.randn(200, 1, 28, 28, generator=g), torch.randint(0, 10, (200,), generator=g))
    results: dict[str, Any] = {}
    for engine in ("sequential", "vmap"):
        finals = {}
        for label, accelerator in (("cpu", "cpu"), ("cuda", device)):
            dm = FederatedDataModule.from_datasets(train, test, num_clients=num_clients, seed=0)
            trainer = FederatedTrainer(rounds=rounds, engine=engine, accelerator=accelerator, logger=False,
                                       enable_progress_bar=False, checkpoint_every=0, batch_size=20, seed=0)
            torch.manual_seed(0)
            trainer.fit(PaperCNN(lr=0.05, momentum=0.5), dm)
            finals[label] = (trainer.global_params.detach().cpu(), trainer.history[-1].metrics)
        cpu, cuda = finals["cpu"][0], finals["cuda"][0]
        diff = (cpu - cuda).abs()
        results[engine] = {
            "max_abs_diff": float(diff.max()),
            "max_rel_diff": float((diff / cpu.abs().clamp_min(1e-3)).max()),
            "test_acc_cpu": finals["cpu"][1].get("test/acc"), "test_acc_cuda": finals["cuda"][1].get("test/acc"),
            "within_tolerance": bool(torch.allclose(cpu, cuda, rtol=1e-3, atol=1e-4)),
        }
    return results


def _time(fn: Callable[[], Any], repeats: int, device: str = "cuda") -> list[float]:
    import torch

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    seconds = []
    for _ in range(repeats):
        sync()
        started = time.perf_counter()
        fn()
        sync()
        seconds.append(time.perf_counter() - started)
    return seconds


def engines(num_clients: int, samples: int, repeats: int, device: str = "cuda") -> dict[str, Any]:
    """Clients per second of one round of ``num_clients`` PaperCNN clients on the GPU, per engine."""
    import torch

    from fl_lightning.context import LocalConfig
    from fl_lightning.engines import SequentialEngine
    from fl_lightning.engines.base import ClientTask
    from fl_lightning.engines.vmap import VmapEngine
    from fl_lightning.models import PaperCNN
    from fl_lightning.param_layout import ParamLayout, flatten

    datas = synthetic_clients(num_clients, samples)
    tasks = [ClientTask(k, data, LocalConfig(epochs=1, batch_size=128), seed=k) for k, data in enumerate(datas)]
    results: dict[str, Any] = {}
    for name, engine in (("sequential", SequentialEngine()), ("vmap", VmapEngine())):
        torch.manual_seed(0)
        module = PaperCNN(lr=0.01, momentum=0.5).to(device)
        layout = ParamLayout.from_module(module)
        engine.setup(module, layout)
        params = flatten([p for p in module.parameters()]).detach().clone()
        buffers = torch.empty(0, device=device)
        out = torch.empty(num_clients, layout.num_params, device=device)
        out_buffers = torch.empty(num_clients, 0, device=device)

        def round_() -> None:
            engine.train_round(params, buffers, tasks, out, out_buffers)

        round_()  # warm-up: CUDA kernels, vmap's probe
        seconds = _time(round_, repeats, device)
        results[name] = {"seconds_median": statistics.median(seconds),
                         "clients_per_second": num_clients / statistics.median(seconds),
                         "fallback": getattr(engine, "fallback_reason", None)}
    results["vmap_speedup"] = results["sequential"]["seconds_median"] / results["vmap"]["seconds_median"]
    results["target_speedup"] = 5.0
    return results


def residual_reweight(k: int, n: int, repeats: int, device: str = "cuda") -> dict[str, Any]:
    """Seconds of ``residual_reweight`` on a ``[k, n]`` CUDA update matrix."""
    import torch

    from fl_lightning.aggregators import functional as F

    g = torch.Generator(device=device).manual_seed(0)
    updates = torch.randn(k, n, device=device, generator=g)
    F.residual_reweight(updates[:, :1000])  # warm-up
    seconds = _time(lambda: F.residual_reweight(updates), repeats, device)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    return {"k": k, "n": n, "seconds_median": statistics.median(seconds), "seconds": seconds,
            "peak_gib": peak, "matrix_gib": updates.numel() * 4 / 2**30}


#: constructor arguments of the rules that need some for ``K`` clients (f = 1 where a rule tolerates f)
_RULE_ARGS: dict[str, dict[str, Any]] = {
    "krum": {"f": 1}, "multi_krum": {"f": 1}, "bulyan": {"f": 1}, "mda": {"f": 1}, "monna": {"f": 1},
    "meamed": {"f": 1}, "caf": {"f": 1}, "smea": {"f": 1}, "dnc": {"f": 1, "sub_dim": 1000},
    "fltrust": {"root_samples": 10}, "geometric_median": {"weighted": True},
}


def _rules() -> dict[str, Callable[[], Any]]:
    """A fresh instance of every rule, and of every pre-aggregator around FedAvg and TrimmedMean, by label."""
    from fl_lightning.aggregators import AGGREGATORS, PRE_AGGREGATORS, get_aggregator

    rules: dict[str, Callable[[], Any]] = {
        name: (lambda name=name: get_aggregator(name, **_RULE_ARGS.get(name, {}))) for name in AGGREGATORS}
    own = {"bucketing": {"s": 2}, "nnm": {"f": 1}, "arc": {"f": 1}}
    for pre in PRE_AGGREGATORS:
        for inner in ("fedavg", "trimmed_mean"):
            rules[f"{pre}({inner})"] = (lambda pre=pre, inner=inner: get_aggregator(
                pre, inner=get_aggregator(inner), **own.get(pre, {})))
    return rules


def _round_inputs(k: int, n: int, device: str) -> tuple[Any, Any]:
    """Random ``[k, n]`` updates (row 3 non-finite, the last row far out) and their round context on ``device``."""
    import torch

    from fl_lightning.context import RoundContext
    from fl_lightning.param_layout import ParamLayout

    body = max(1, (n - 1011) // 100)
    layout = ParamLayout.from_shapes(["body.weight", "head.weight", "head.bias", "temperature"],
                                     [(body, 100), (10, 100), (10,), ()])
    g = torch.Generator().manual_seed(0)
    updates = torch.randn(k, layout.num_params, generator=g)
    updates[1] = updates[0] + 1e-3 * torch.randn(layout.num_params, generator=g)
    updates[k - 1] *= 20
    updates[3, 5] = float("nan")
    ctx = RoundContext(round=2, client_ids=list(range(k)), num_samples=torch.arange(10.0, 10.0 + k),
                       layout=layout, global_params=torch.randn(layout.num_params, generator=g), seed=0,
                       num_clients=k, reference_update=updates[2].abs() + 0.1,
                       finite=torch.isfinite(updates).all(dim=1))
    moved = {name: getattr(ctx, name).to(device) for name in ("num_samples", "global_params", "reference_update",
                                                                "finite")}
    for name, value in moved.items():
        setattr(ctx, name, value)
    return updates.to(device), ctx


def _difference(cpu: Any, other: Any) -> dict[str, Any]:
    """Largest absolute and relative difference of two tensors (``None`` when either is missing)."""
    import torch

    if cpu is None or other is None:
        return {"same_presence": cpu is None and other is None}
    other = other.detach().cpu().to(cpu.dtype)
    diff = (cpu - other).abs()
    return {"max_abs_diff": float(diff.max()) if diff.numel() else 0.0,
            "max_rel_diff": float((diff / cpu.abs().clamp_min(1e-3)).max()) if diff.numel() else 0.0,
            "within_tolerance": bool(torch.allclose(cpu, other, rtol=1e-4, atol=1e-5))}


def aggregators(k: int, n: int, device: str = "cuda") -> dict[str, Any]:
    """Every rule on ``device`` against the CPU, on the same updates: differences of updates, weights and flags."""
    import torch

    results: dict[str, Any] = {"k": k, "n": n}
    for label, build in _rules().items():
        try:
            outcome = {}
            for where in ("cpu", device):
                updates, ctx = _round_inputs(k, n, where)
                result = build().aggregate(updates, ctx)
                flagged = result.diagnostics.get("flagged")
                outcome[where] = (result.update.detach().cpu(), result.update.device.type,
                                  None if result.client_weights is None else result.client_weights.detach().cpu(),
                                  None if flagged is None else flagged.detach().cpu())
            cpu, other = outcome["cpu"], outcome[device]
            update, weights = _difference(cpu[0], other[0]), _difference(cpu[2], other[2])
            results[label] = {
                "update": update, "client_weights": weights, "result_on": other[1],
                "flagged_equal": cpu[3] is None and other[3] is None or (
                    cpu[3] is not None and other[3] is not None and bool(torch.equal(cpu[3], other[3]))),
            }
            results[label]["ok"] = bool(update.get("within_tolerance") and weights.get("within_tolerance", True)
                                        and weights.get("same_presence", True) and results[label]["flagged_equal"]
                                        and other[1] == torch.device(device).type)
        except Exception as exc:  # one failing rule must not hide the others
            results[label] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    results["all_ok"] = all(v["ok"] for key, v in results.items() if isinstance(v, dict))
    return results


def peers(ks: list[int], n: int, repeats: int, device: str = "cuda") -> dict[str, Any]:
    """``benchmarks/peers.py``'s cells on ``device``: ours, ByzFL and ByzPy side by side, results compared."""
    import os

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import peers as side_by_side

    found = side_by_side.available_peers()
    rows = [side_by_side.run_cell(rule, k, n, 1, repeats, found, device=device)
            for k in ks for rule in side_by_side.RULES]
    return {"versions": {p: (v or "missing") for p, v in found.items()}, "results": rows,
            "all_agree": all(row[p].get("agrees", True) for row in rows for p in found
                             if isinstance(row.get(p), dict) and "error" not in row[p])}


def main(argv: list[str] | None = None) -> int:
    """Run the chosen parts and print their JSON; exit 0 with a message when there is no CUDA."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the CPU/GPU agreement fits")
    parser.add_argument("--clients", type=int, default=100, help="clients of the engine timing")
    parser.add_argument("--samples", type=int, default=40, help="samples per client of the engine timing")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rr-n", type=int, default=11_200_000, help="columns of the residual_reweight matrix")
    parser.add_argument("--agg-k", type=int, default=20, help="clients of the aggregator comparison")
    parser.add_argument("--agg-n", type=int, default=100_000, help="columns of the aggregator comparison")
    parser.add_argument("--peer-ks", type=int, nargs="+", default=[20, 100], help="clients of the peers part")
    parser.add_argument("--peer-n", type=int, default=1_000_000, help="columns of the peers part")
    parser.add_argument("--dry-run-on-cpu", action="store_true",
                        help="run every part on the CPU instead (checks the script itself; no GPU figures)")
    args = parser.parse_args(argv)
    import torch

    device = "cpu" if args.dry_run_on_cpu else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print(json.dumps({"cuda": False, "message": "no CUDA device: nothing to measure (run this on a GPU machine)"}))
        return 0
    report: dict[str, Any] = {"cuda": device == "cuda", "torch": torch.__version__,
                              "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu (dry run)"}
    warnings.simplefilter("ignore")
    for part in args.parts:
        try:
            if part == "agreement":
                report[part] = agreement(args.rounds, num_clients=10, samples=40, device=device)
            elif part == "engines":
                report[part] = engines(args.clients, args.samples, args.repeats, device)
            elif part == "aggregators":
                report[part] = aggregators(args.agg_k, args.agg_n, device)
            elif part == "peers":
                report[part] = peers(args.peer_ks, args.peer_n, args.repeats, device)
            else:
                report[part] = residual_reweight(100, args.rr_n, args.repeats, device)
        except Exception as exc:  # one failing part must not hide the others' figures
            report[part] = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
