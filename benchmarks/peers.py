"""Our functional rules against ByzFL and ByzPy, side by side: one process, the same ``[K, N]`` float32 input.

For every cell (rule, K, N, threads) the implementations run interleaved (ours, ByzFL, ByzPy, ours,
...) ``--repeats`` times and the best time of each is kept: on a shared, loaded machine the best of
several interleaved runs is the figure that compares. Each peer's result is checked against ours
under the documented convention (the table in BENCHMARKS.md, section "Against ByzFL and ByzPy"):
where the libraries define a rule differently the comparison maps one onto the other (``f + 1`` for
Krum's neighbour count, the lower middle value for ByzPy's median at even K, ...). A peer that is not
installed is reported as missing, never skipped silently (``pip install 'fl-lightning[bench]'`` brings
ByzFL; ``pip install --no-deps byzpy==0.1.4`` brings ByzPy, whose pins would downgrade torch).

Prints one JSON object (``results``: one row per cell) and, with ``--table``, a Markdown table with
each peer's time over ours.

    python benchmarks/peers.py --quick                      # a few small cells, seconds (CI smoke test)
    python benchmarks/peers.py                              # the whole grid of issue 21 (long)
    python benchmarks/peers.py --rules median krum --ks 50 100 --ns 100000 --threads 1 2 --table
"""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

RULES = ("median", "trimmed_mean", "krum", "multi_krum", "krum_float32", "multi_krum_float32", "geometric_median",
         "geometric_median_3", "centered_clipping", "mda", "monna", "nnm", "nnm_float32", "arc")
#: ``<rule>_float32``: ours with ``exact=False`` (one float32 Gram matrix, as ByzPy), against the same peers
FLOAT32 = "_float32"
PEERS = ("byzfl", "byzpy")
KS = (10, 20, 50, 100, 200)
NS = (10_000, 100_000, 1_000_000)
#: N = 1e7 only for K <= 20 (the input is then at most 800 MB)
BIG_N, BIG_N_MAX_K = 10_000_000, 20
#: MDA examines C(K, f) subsets in every library: f is capped so that the count stays small, and K too
#: (ByzFL and ByzPy loop over the subsets in Python: C(200, 2) of them take minutes a call)
MDA_MAX_F, MDA_MAX_K = 2, 50
#: the Weiszfeld budget of ``geometric_median_3``: ByzFL's default number of steps, given to all three
GM_STEPS = 3
#: centered clipping's radius and steps, the same for the three libraries (they start from 0)
CC_TAU, CC_ITERS = 10.0, 3


def byzantine(k: int) -> int:
    """f of every cell: a fifth of the clients, within Krum's ``K > 2f + 2`` with ByzFL's ``f + 1``."""
    return max(1, min(k // 5, (k - 4) // 2))


@dataclass
class Contender:
    """One implementation of a rule: what to call on the input, and the result it should equal."""

    run: Callable[[Tensor], Any]
    #: the result ours must match after the convention is mapped; None: compare with ours as is
    expected: Callable[[Tensor, Tensor], Tensor] | None = None
    #: relative tolerance of the comparison (iterative rules stop at different points)
    rtol: float = 1e-4
    note: str = ""
    #: ByzPy's API: a list of ``[N]`` tensors (it stacks them itself)
    takes_rows: bool = False
    #: writes into its input (ARC in place): every call gets a fresh copy, made before the clock starts
    mutates: bool = False


def _as_tensor(result: Any) -> Tensor:
    if isinstance(result, (list, tuple)):
        return torch.stack([torch.as_tensor(r) for r in result])
    return torch.as_tensor(result)


def _lower_median(u: Tensor, _ours: Tensor) -> Tensor:
    return torch.kthvalue(u, (u.shape[0] + 1) // 2, dim=0).values


def _mda_first_subset(u: Tensor, f: int) -> Tensor:
    """MDA with ByzFL's and ByzPy's tie-break: the first subset in lexicographic order among the smallest
    diameters (ours prefers the smaller sum of squared distances; equal diameters are common, since
    every subset holding the farthest remaining pair shares its diameter)."""
    import itertools

    k = u.shape[0]
    dist = torch.cdist(u.double(), u.double())
    best: tuple[float, tuple[int, ...]] | None = None
    for kept in itertools.combinations(range(k), k - f):
        index = torch.tensor(kept)
        diameter = float(dist[index][:, index].max())
        if best is None or diameter < best[0]:
            best = (diameter, kept)
    assert best is not None
    return u[list(best[1])].mean(dim=0)


def _geometric_median_float64(u: Tensor) -> Tensor:
    """The reference geometric median: Weiszfeld in float64 from the coordinate median, to a tight tolerance."""
    from fl_lightning.aggregators import functional as F

    return F.geometric_median(u.double(), tol=1e-10, max_iter=1000, eps=1e-12).float()


def ours(name: str, k: int) -> Contender:
    """Our rule ``name`` at ``k`` clients."""
    from fl_lightning.aggregators import functional as F

    f = byzantine(k)
    rules: dict[str, Callable[[Tensor], Any]] = {
        "median": F.coordinate_median,
        "trimmed_mean": lambda u: F.trimmed_mean(u, f=f),
        "krum": lambda u: F.krum(u, f),
        "multi_krum": lambda u: F.krum(u, f, m=k - f - 1),
        "krum_float32": lambda u: F.krum(u, f, exact=False),
        "multi_krum_float32": lambda u: F.krum(u, f, m=k - f - 1, exact=False),
        "geometric_median": lambda u: F.geometric_median(u, tol=1e-6, eps=1e-6),
        "geometric_median_3": lambda u: F.geometric_median(u, tol=1e-6, eps=1e-6, max_iter=GM_STEPS),
        "centered_clipping": lambda u: F.centered_clipping(
            u, tau=CC_TAU, iters=CC_ITERS, center=torch.zeros(u.shape[1], dtype=u.dtype)),
        "mda": lambda u: F.mda(u, min(f, MDA_MAX_F)),
        "monna": lambda u: F.monna(u, f),
        "nnm": lambda u: F.nnm(u, f),
        "nnm_float32": lambda u: F.nnm(u, f, exact=False),
        "arc": lambda u: F.arc(u, f, inplace=True),
    }
    if name == "arc":
        return Contender(rules[name], mutates=True, note="in place, as ByzFL's")
    return Contender(rules[name])


def byzfl_rule(name: str, k: int) -> Contender | None:
    """ByzFL's rule ``name`` mapped to ours (None where ByzFL has no such rule)."""
    import byzfl

    name = name.removesuffix(FLOAT32)

    f = byzantine(k)
    if name == "median":
        return Contender(byzfl.Median(), note="torch.quantile: mean of the two middle values, as ours")
    if name == "trimmed_mean":
        return Contender(byzfl.TrMean(f=f))
    if name == "krum":
        return Contender(byzfl.Krum(f=f + 1), note="Krum(f + 1): ByzFL scores n - f - 1 neighbours, ours K - f - 2")
    if name == "multi_krum":
        return Contender(byzfl.MultiKrum(f=f + 1), note="MultiKrum(f + 1) averages the K - f - 1 best, as ours")
    if name == "geometric_median":
        return Contender(byzfl.GeometricMedian(nu=1e-6, T=3), expected=lambda u, _: _geometric_median_float64(u),
                         rtol=math.inf, note="3 Weiszfeld steps from 0 (ByzFL's budget): error reported, not checked")
    if name == "geometric_median_3":
        return Contender(byzfl.GeometricMedian(nu=1e-6, T=GM_STEPS), expected=lambda u, _: _geometric_median_float64(u),
                         rtol=math.inf, note=f"{GM_STEPS} Weiszfeld steps in all three (ByzFL from 0, ours from the "
                                             "coordinate median): each one's error reported, not checked")
    if name == "centered_clipping":
        return Contender(lambda u: byzfl.CenteredClipping(L=CC_ITERS, tau=CC_TAU)(u))
    if name == "mda":
        return Contender(byzfl.MDA(f=min(f, MDA_MAX_F)), expected=lambda u, _: _mda_first_subset(u, min(f, MDA_MAX_F)),
                         note="equal diameters: the first subset in lexicographic order (ours: the tighter one)")
    if name == "monna":
        return Contender(byzfl.MoNNA(f=f, idx=0))
    if name == "nnm":
        return Contender(byzfl.NNM(f=f))
    if name == "arc":
        return Contender(byzfl.ARC(f=f), mutates=True)
    return None


def byzpy_rule(name: str, k: int) -> Contender | None:
    """ByzPy's rule ``name`` mapped to ours (None where ByzPy has no such rule).

    ByzPy's aggregators take a list of tensors and stack them (their documented API): the list of row
    views is built outside the timing, the stacking is theirs.
    """
    name = name.removesuffix(FLOAT32)
    from byzpy.aggregators import coordinate_wise as C, geometric_wise as G, norm_wise as Nw
    from byzpy import pre_aggregators as P

    f = byzantine(k)

    def rows(fn: Callable[[list[Tensor]], Any]) -> Callable[[list[Tensor]], Any]:
        return fn

    if name == "median":
        return Contender(takes_rows=True, run=rows(C.CoordinateWiseMedian().aggregate), expected=_lower_median,
                         note="torch.median: the lower middle value at even K")
    if name == "trimmed_mean":
        return Contender(takes_rows=True, run=rows(C.CoordinateWiseTrimmedMean(f=f).aggregate))
    if name == "krum":
        return Contender(takes_rows=True, run=rows(G.Krum(f=f + 1).aggregate), note="Krum(f + 1), as ByzFL")
    if name == "multi_krum":
        return Contender(takes_rows=True, run=rows(G.MultiKrum(f=f + 1, q=k - f - 1).aggregate))
    if name == "geometric_median":
        return Contender(takes_rows=True, run=rows(G.GeometricMedian(tol=1e-6, max_iter=256).aggregate),
                         expected=lambda u, _: _geometric_median_float64(u), rtol=math.inf,
                         note="tol 1e-6 (absolute step), up to 256 steps: error reported, not checked")
    if name == "geometric_median_3":
        return Contender(takes_rows=True, run=rows(G.GeometricMedian(tol=1e-6, max_iter=GM_STEPS).aggregate),
                         expected=lambda u, _: _geometric_median_float64(u), rtol=math.inf,
                         note=f"at most {GM_STEPS} steps: error reported, not checked")
    if name == "centered_clipping":
        return Contender(takes_rows=True, run=rows(Nw.CenteredClipping(c_tau=CC_TAU, M=CC_ITERS, init="zero").aggregate))
    if name == "mda":
        return Contender(takes_rows=True, run=rows(G.MinimumDiameterAveraging(f=min(f, MDA_MAX_F)).aggregate),
                         expected=lambda u, _: _mda_first_subset(u, min(f, MDA_MAX_F)), note="as ByzFL")
    if name == "monna":
        return Contender(takes_rows=True, run=rows(G.MoNNA(f=f, reference_index=0).aggregate))
    if name == "nnm":
        return Contender(takes_rows=True, run=rows(P.NearestNeighborMixing(f=f).pre_aggregate))
    if name == "arc":
        return Contender(takes_rows=True, run=rows(P.ARC(f=f).pre_aggregate))
    return None


def available_peers() -> dict[str, str | None]:
    """Each peer's installed version, or None when it cannot be imported."""
    found: dict[str, str | None] = {}
    for peer in PEERS:
        try:
            importlib.import_module(peer)
            found[peer] = importlib.metadata.version(peer)
        except Exception:                # not installed, or broken at import: reported as missing
            found[peer] = None
    return found


def _call(contender: Contender, u: Tensor, row_views: list[Tensor]) -> tuple[float, Any]:
    if contender.mutates:
        u = u.clone()
        row_views = list(u.unbind(0))
    cuda = u.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    start, cpu_start = time.perf_counter(), time.process_time()
    result = contender.run(row_views if contender.takes_rows else u)
    if cuda:
        torch.cuda.synchronize()
    _call.cpu_seconds = time.process_time() - cpu_start       # type: ignore[attr-defined]
    return time.perf_counter() - start, result


def compare(ours_result: Tensor, theirs: Any, expected: Tensor | None, rtol: float) -> dict[str, Any]:
    """How far a peer's result is from what ours gives under the mapped convention."""
    theirs_t = _as_tensor(theirs).double()
    target = (ours_result if expected is None else expected).double()
    if theirs_t.shape != target.shape:
        return {"agrees": False, "error": f"shape {tuple(theirs_t.shape)} != {tuple(target.shape)}"}
    scale = float(target.abs().max()) if target.numel() else 0.0
    diff = float((theirs_t - target).abs().max()) if target.numel() else 0.0
    relative = diff / max(scale, 1e-30)
    row = {"max_abs_diff": diff, "relative_diff": relative}
    if math.isfinite(rtol):
        row["agrees"] = relative <= rtol
    else:
        row["ours_relative_error"] = float((ours_result.double() - target).abs().max()) / max(scale, 1e-30)
    return row


def run_cell(rule: str, k: int, n: int, threads: int, repeats: int, peers: dict[str, str | None],
             seed: int = 0, device: str = "cpu") -> dict[str, Any]:
    """Time ours and every installed peer on one ``[k, n]`` input, interleaved, best of ``repeats``.

    ``device="cuda"`` puts the input on the GPU (``benchmarks/gpu.py --parts peers``); a peer that fails
    there (e.g. one that goes through NumPy) is reported with its error, not hidden.
    """
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(k, n, generator=g)
    u[0] += 3.0                                          # one client out of the crowd
    u = u.to(device)
    row_views = list(u.unbind(0))
    contenders: dict[str, Contender | None] = {"ours": ours(rule, k)}
    builders = {"byzfl": byzfl_rule, "byzpy": byzpy_rule}
    for peer, version in peers.items():
        contenders[peer] = builders[peer](rule, k) if version else None
    # wall seconds, and CPU seconds of this process: on a loaded machine a one-thread run's CPU time is
    # the steadier figure (waiting for a core costs wall time, not CPU time)
    best: dict[str, float] = {}
    best_cpu: dict[str, float] = {}
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    warm = u[:, : min(n, 256)].contiguous()
    for label, contender in contenders.items():          # load code paths and thread pools, untimed
        if contender is not None:
            try:
                _call(contender, warm, list(warm.unbind(0)))
            except Exception as exc:   # a peer failing on this input or device is reported, not hidden
                if label == "ours":
                    raise
                errors[label] = f"{type(exc).__name__}: {exc}"[:200]
    for _ in range(repeats):
        for label, contender in contenders.items():
            if contender is None or label in errors:
                continue
            try:
                seconds, result = _call(contender, u, row_views)
            except Exception as exc:   # e.g. a peer's [K, K, N] buffer that does not fit in memory
                if label == "ours":
                    raise
                errors[label] = f"{type(exc).__name__}: {exc}"[:200]
                results.pop(label, None)
                continue
            best[label] = min(best.get(label, math.inf), seconds)
            best_cpu[label] = min(best_cpu.get(label, math.inf), _call.cpu_seconds)   # type: ignore[attr-defined]
            results[label] = result
    row: dict[str, Any] = {"rule": rule, "k": k, "n": n, "threads": threads, "f": byzantine(k),
                           "device": u.device.type, "ours_s": best["ours"], "ours_cpu_s": best_cpu["ours"]}
    ours_result = _as_tensor(results["ours"]).cpu()
    for peer, version in peers.items():
        contender = contenders[peer]
        if version is None:
            row[peer] = "missing"
            continue
        if contender is None:
            row[peer] = "no such rule"
            continue
        if peer in errors:
            row[peer] = {"error": errors[peer]}
            continue
        expected = contender.expected(u, ours_result).cpu() if contender.expected else None
        theirs = results[peer]
        theirs = [t.cpu() for t in theirs] if isinstance(theirs, (list, tuple)) else torch.as_tensor(theirs).cpu()
        row[peer] = {"seconds": best[peer], "peer_over_ours": best[peer] / best["ours"],
                     "cpu_seconds": best_cpu[peer], "cpu_peer_over_ours": best_cpu[peer] / max(best_cpu["ours"], 1e-9),
                     **compare(ours_result, theirs, expected, contender.rtol)}
        if contender.note:
            row[peer]["convention"] = contender.note
    return row


def grid(rules: list[str], ks: list[int], ns: list[int], threads: list[int]) -> list[tuple[str, int, int, int]]:
    """The cells to run: every rule, K, N (1e7 only for K <= 20) and thread count."""
    cells = []
    for n in ns:
        for k in ks:
            if n >= BIG_N and k > BIG_N_MAX_K:
                continue
            for rule in rules:
                if rule == "mda" and k > MDA_MAX_K:
                    continue
                for t in threads:
                    cells.append((rule, k, n, t))
    return cells


def markdown(rows: list[dict[str, Any]], peers: dict[str, str | None]) -> str:
    """The rows as a Markdown table: ours in ms, each peer in ms with its time over ours."""
    head = "| rule | K x N | threads | ours ms | " + " | ".join(f"{p} ms (x ours)" for p in peers) + " |"
    lines = [head, "|" + "---|" * (4 + len(peers))]
    for r in rows:
        cells = []
        for peer in peers:
            v = r.get(peer)
            if isinstance(v, dict) and "error" in v:
                cells.append("error")
            elif isinstance(v, dict):
                mark = "" if v.get("agrees", True) else " (differs!)"
                cells.append(f"{1e3 * v['seconds']:.1f} ({v['peer_over_ours']:.2f}x; CPU {v['cpu_peer_over_ours']:.2f}x){mark}")
            else:
                cells.append(str(v))
        lines.append(f"| {r['rule']} | {r['k']} x {r['n']:.0e} | {r['threads']} | {1e3 * r['ours_s']:.1f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse the arguments, run the cells, print the JSON report (and the table with ``--table``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few small cells (seconds): a smoke test of the harness")
    parser.add_argument("--rules", nargs="+", default=list(RULES), choices=RULES)
    parser.add_argument("--ks", nargs="+", type=int, default=list(KS))
    parser.add_argument("--ns", nargs="+", type=int, default=list(NS) + [BIG_N])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs per cell; the best is kept")
    parser.add_argument("--table", action="store_true", help="also print a Markdown table to stderr")
    args = parser.parse_args(argv)
    if args.quick:
        args.ks, args.ns, args.threads, args.repeats = [10], [2000], [1], 1
    peers = available_peers()
    load_before = os.getloadavg()
    started = time.perf_counter()
    rows = []
    previous = torch.get_num_threads()
    try:
        for rule, k, n, t in grid(args.rules, args.ks, args.ns, args.threads):
            row = run_cell(rule, k, n, t, args.repeats, peers)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        torch.set_num_threads(previous)
    report = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_before": load_before, "load_average_after": os.getloadavg()},
        "versions": {"torch": torch.__version__, **{p: (v or "missing") for p, v in peers.items()}},
        "missing": [p for p, v in peers.items() if v is None],
        "total_seconds": time.perf_counter() - started,
        "results": rows,
    }
    print(json.dumps(report, indent=1))
    if args.table:
        print(markdown(rows, peers), file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
