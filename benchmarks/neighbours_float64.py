"""Which NNM / MoNNA result is right where ours and a peer's differ? Both against float64 distances.

At N = 1e7 the rows of ``benchmarks/peers.py``'s input (``torch.randn``, row 0 shifted by 3) sit at
nearly equal distances from each other, so float32 distances may pick other neighbours. This rebuilds
that input, selects the neighbours from exact float64 squared distances (``argsort``, stable), and prints
one JSON object per case: how far ours and each installed peer's (ByzFL, ByzPy) results are from the
float64 one, and the smallest relative gap between the last selected and the first left-out neighbour.

    python benchmarks/neighbours_float64.py [--cases nnm:10:10000000 monna:20:10000000]
"""
from __future__ import annotations

import argparse
import json

import torch

from fl_lightning.aggregators import functional as F


def _input(k: int, n: int) -> torch.Tensor:
    u = torch.randn(k, n, generator=torch.Generator().manual_seed(0))     # peers.run_cell's input
    u[0] += 3.0
    return u


def _peers(rule: str, u: torch.Tensor, f: int) -> dict[str, object]:
    """Each installed peer's result on ``u`` (a fresh copy each), or why there is none."""
    results: dict[str, object] = {}
    try:
        import byzfl
    except ImportError:
        results["byzfl"] = "missing"
    else:
        try:
            results["byzfl"] = (byzfl.NNM(f=f) if rule == "nnm" else byzfl.MoNNA(f=f, idx=0))(u.clone())
        except RuntimeError as exc:                   # ByzFL's NNM asks for a [K, K, N] buffer
            results["byzfl"] = f"error: {exc}"[:160]
    try:
        from byzpy import pre_aggregators
        from byzpy.aggregators import geometric_wise
    except ImportError:
        results["byzpy"] = "missing"
    else:
        rows = list(u.clone().unbind(0))
        results["byzpy"] = (pre_aggregators.NearestNeighborMixing(f=f).pre_aggregate(rows) if rule == "nnm"
                            else geometric_wise.MoNNA(f=f, reference_index=0).aggregate(rows))
    return results


def check(rule: str, k: int, n: int) -> dict[str, object]:
    f = k // 5
    u = _input(k, n)
    exact_values = u.double()
    sq = (exact_values * exact_values).sum(dim=1)
    dist = sq.unsqueeze(0) + sq.unsqueeze(1) - 2 * exact_values @ exact_values.T
    kept = k - f
    if rule == "nnm":
        nearest = torch.argsort(dist, dim=1, stable=True)[:, :kept]
        mixing = torch.zeros(k, k, dtype=torch.float64).scatter_(1, nearest, 1.0 / kept)
        expected = mixing @ exact_values
        ours = F.nnm(u, f)
    else:
        nearest = torch.argsort(dist[0], stable=True)[:kept]
        expected = exact_values[nearest].mean(dim=0)
        ours = F.monna(u, f)
    ordered = torch.sort(dist, dim=1).values
    gap = ((ordered[:, kept] - ordered[:, kept - 1]) / ordered[:, kept]).min()
    report: dict[str, object] = {"rule": rule, "k": k, "n": n, "f": f,
                                 "ours_max_abs_error": float((ours.double() - expected).abs().max())}
    for peer, result in _peers(rule, u, f).items():
        if isinstance(result, str):
            report[f"{peer}_max_abs_error"] = result
            continue
        theirs = torch.stack(list(result)) if isinstance(result, (list, tuple)) else torch.as_tensor(result)
        report[f"{peer}_max_abs_error"] = float((theirs.double() - expected).abs().max())
    report["smallest_relative_gap_at_the_boundary"] = float(gap)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["nnm:10:10000000", "monna:20:10000000"],
                        help="RULE:K:N with RULE nnm or monna")
    for case in parser.parse_args().cases:
        rule, k, n = case.split(":")
        print(json.dumps(check(rule, int(k), int(n))), flush=True)


if __name__ == "__main__":
    main()
