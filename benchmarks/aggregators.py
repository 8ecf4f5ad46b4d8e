"""Seconds and peak extra memory of every aggregation rule, beside torch.median / torch.mean on the same matrix.

Every measurement runs in a fresh child process: it builds the ``[K, N]`` float32 input, warms the
rule up on a few columns, reads its resident set size (RSS), runs the rule once and reports the wall
and CPU seconds and ``ru_maxrss - RSS before the run`` (torch allocations are invisible to
tracemalloc). Prints one JSON object; ``ratio_to_median`` divides by ``torch.median(dim=0)`` timed in
the same invocation, which is what to compare on a shared machine.

    python benchmarks/aggregators.py                    # the four sizes of BENCHMARKS.md
    python benchmarks/aggregators.py --quick            # two small sizes, a few seconds
    python benchmarks/aggregators.py --sizes 10x1000000 --rules residual_reweight torch_median
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

SIZES = ("100x3146", "100x100000", "10x1000000", "10x11200000")
QUICK_SIZES = ("100x3146", "10x100000")


def _byzantine(k: int) -> int:
    """f for Krum and Bulyan: a tenth of the clients, at least 1, within Bulyan's K >= 4f + 3."""
    return max(1, min(k // 10, (k - 3) // 4))


def _functional():
    """``fl_lightning.aggregators.functional``: the pure maths (``import fl_lightning`` itself is lazy, so a
    child process pays for torch and the aggregators, not for Lightning)."""
    from fl_lightning.aggregators import functional

    return functional


def rule(name: str, k: int):
    """The callable measured under ``name`` for ``k`` clients."""
    import torch

    F = _functional()

    f = _byzantine(k)
    rules = {
        "torch_median": lambda u: torch.median(u, dim=0).values,
        "torch_mean": lambda u: torch.mean(u, dim=0),
        "fedavg": F.fedavg,
        "coordinate_median": F.coordinate_median,
        "trimmed_mean": lambda u: F.trimmed_mean(u, 0.2),
        "repeated_median": F.repeated_median,
        "residual_reweight": lambda u: F.residual_reweight(u).aggregate,
        "residual_reweight_paper": lambda u: F.residual_reweight(u, variant="paper").aggregate,
        "foolsgold_weights": F.foolsgold_weights,
        "krum": lambda u: F.krum(u, f),
        "multi_krum": lambda u: F.krum(u, f, m=k - f),
        "bulyan": lambda u: F.bulyan(u, f),
        "geometric_median": F.geometric_median,
        "centered_clipping": F.centered_clipping,
        "norm_clipping": lambda u: F.norm_clipping(u, 1.0),
        "meamed": lambda u: F.meamed(u, f),
        "monna": lambda u: F.monna(u, f),
    }
    return rules[name]


RULES = ("torch_median", "torch_mean", "fedavg", "coordinate_median", "trimmed_mean", "repeated_median",
         "residual_reweight", "residual_reweight_paper", "foolsgold_weights", "krum", "multi_krum", "bulyan",
         "geometric_median", "centered_clipping", "norm_clipping", "meamed", "monna")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(name: str, k: int, n: int, seed: int) -> dict:
    """One measurement in this (fresh) process."""
    import torch

    run = rule(name, k)
    generator = torch.Generator().manual_seed(seed)
    updates = torch.randn(k, n, generator=generator)
    torch.ones(1 << 20).sum()                          # start the intra-op thread pool
    run(updates[:, :64].contiguous())                  # warm-up: load code paths
    before = _rss_bytes()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = usage.ru_utime + usage.ru_stime
    start = time.perf_counter()
    run(updates)
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak = usage.ru_maxrss * 1024                      # KiB on Linux
    return {"rule": name, "k": k, "n": n, "seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime - cpu0,
            "input_bytes": updates.numel() * 4, "peak_extra_bytes": max(0, peak - before),
            "torch_threads": torch.get_num_threads()}


def run_child(name: str, k: int, n: int, seed: int, timeout: float) -> dict:
    """:func:`measure` in a child process; a timeout or crash is reported, not raised."""
    command = [sys.executable, __file__, "--child", name, str(k), str(n), str(seed)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"rule": name, "k": k, "n": n, "skipped": f"over {timeout:.0f} s"}
    if done.returncode != 0:
        return {"rule": name, "k": k, "n": n, "skipped": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, measure every (size, rule) pair, print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"only the sizes {', '.join(QUICK_SIZES)}")
    parser.add_argument("--sizes", nargs="+", default=None, help="KxN sizes, e.g. 100x3146")
    parser.add_argument("--rules", nargs="+", default=list(RULES), choices=RULES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per measurement")
    parser.add_argument("--child", nargs=4, metavar=("RULE", "K", "N", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        name, k, n, seed = args.child
        print(json.dumps(measure(name, int(k), int(n), int(seed))))
        return
    sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    started = time.perf_counter()
    load_before = os.getloadavg()
    results = []
    for size in sizes:
        k, n = (int(v) for v in size.lower().split("x"))
        rows = [run_child(name, k, n, args.seed, args.timeout) for name in args.rules]
        median = next((r["seconds"] for r in rows if r["rule"] == "torch_median" and "seconds" in r), None)
        for row in rows:
            if "seconds" in row:
                row["extra_over_input"] = row["peak_extra_bytes"] / row["input_bytes"]
                if median:
                    row["ratio_to_median"] = row["seconds"] / median
            print(json.dumps(row), file=sys.stderr, flush=True)
        results.extend(rows)
    import torch

    report = {"torch": torch.__version__, "cpus": os.cpu_count(), "load_average_before": load_before,
              "load_average_after": os.getloadavg(), "total_seconds": time.perf_counter() - started,
              "results": results}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
