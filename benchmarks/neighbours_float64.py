"""Which NNM / MoNNA result is right where ours and a peer's differ? Both against float64 distances.

At N = 1e7 the rows of ``benchmarks/peers.py``'s input (``torch.randn``, row 0 shifted by 3) sit at
nearly equal distances from each other, so float32 distances may pick other neighbours. This rebuilds
that input, selects the neighbours from exact float64 squared distances (``argsort``, stable), and prints
one JSON object per case: how far ours and ByzFL's results are from the float64 one, and the smallest
relative gap between the last selected and the first left-out neighbour.

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


def check(rule: str, k: int, n: int) -> dict[str, object]:
    import byzfl

    f = k // 5
    u = _input(k, n)
    exact_values = u.double()
    sq = (exact_values * exact_values).sum(dim=1)
    dist = sq.unsqueeze(0) + sq.unsqueeze(1) - 2 * exact_values @ exact_values.T
    kept = k - f
    if rule == "nnm":
        nearest = torch.argsort(dist, dim=1, stable=True)[:, :kept]
        expected = torch.stack([exact_values[row].mean(dim=0) for row in nearest])
        ours, theirs = F.nnm(u, f), byzfl.NNM(f=f)(u.clone())
    else:
        nearest = torch.argsort(dist[0], stable=True)[:kept]
        expected = exact_values[nearest].mean(dim=0)
        ours, theirs = F.monna(u, f), byzfl.MoNNA(f=f, idx=0)(u.clone())
    ordered = torch.sort(dist, dim=1).values
    gap = ((ordered[:, kept] - ordered[:, kept - 1]) / ordered[:, kept]).min()
    return {"rule": rule, "k": k, "n": n, "f": f,
            "ours_max_abs_error": float((ours.double() - expected).abs().max()),
            "byzfl_max_abs_error": float((torch.as_tensor(theirs).double() - expected).abs().max()),
            "smallest_relative_gap_at_the_boundary": float(gap)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["nnm:10:10000000", "monna:20:10000000"],
                        help="RULE:K:N with RULE nnm or monna")
    for case in parser.parse_args().cases:
        rule, k, n = case.split(":")
        print(json.dumps(check(rule, int(k), int(n))), flush=True)


if __name__ == "__main__":
    main()
