"""Pre-aggregators: maps from the ``[K, N]`` updates to the rows another rule then aggregates.

Each drops non-finite rows first, so its output holds only finite rows.
"""
from __future__ import annotations

import torch
from torch import Tensor

from fl_lightning.aggregators.functional._base import (
    _check_updates, _count_finite, _draw_device, _finite_pairwise_sq_distances, _finite_sq_distances,
    _finite_values, _require_finite,
)
from fl_lightning.aggregators.functional._rules import MAJORITY
from fl_lightning.checks import check_bool, check_int


def bucket_indices(k: int, s: int, generator: torch.Generator | None = None,
                   device: torch.device | None = None) -> list[Tensor]:
    """Row indices of each bucket: a random permutation of ``range(k)`` cut into runs of ``s``
    (the last bucket holds the ``k mod s`` left over, as in ByzFL), on ``device`` (default: the CPU).

    The permutation is drawn on the generator's device and then moved, so a seed gives the same
    buckets whatever device the updates live on.
    """
    check_int(s, "s (the bucket size)", "bucketing", minimum=1)
    order = torch.randperm(k, generator=generator, device=_draw_device(generator))
    return list(order.to(device).split(s))


def bucketing(updates: Tensor, s: int, generator: torch.Generator | None = None,
              *, finite: Tensor | None = None) -> Tensor:
    """Bucketing (Karimireddy et al., ICLR 2022, Algorithm 1): the ``ceil(K / s)`` means of the finite rows
    shuffled by ``generator`` and grouped ``s`` at a time. ``s = 1`` returns the rows, shuffled."""
    values, _ = _require_finite(updates, 1, "bucketing", finite)
    buckets = bucket_indices(values.shape[0], s, generator, values.device)
    return torch.stack([values[index].mean(dim=0) for index in buckets])


def nnm_weights(updates: Tensor, f: int, *, finite: Tensor | None = None, exact: bool = True) -> Tensor:
    """``[K_f, K_f]`` mixing matrix of NNM: row ``i`` holds ``1 / (K - f)`` on the ``K - f`` finite rows
    nearest to row ``i`` (itself included; equal distances broken by row index).

    Distances come from a float64 Gram matrix; ``exact=False`` takes it in the updates' precision (one
    BLAS product, as ByzPy): faster, but neighbours whose distances differ by less than its rounding may
    then be chosen otherwise.
    """
    return _nnm_weights(updates, f, finite, exact)[0]


def _nnm_weights(updates: Tensor, f: int, finite: Tensor | None, exact: bool) -> tuple[Tensor, Tensor]:
    """``(nnm_weights, finite mask)``: the Gram matrix's diagonal doubles as the scan for non-finite rows."""
    name = "nnm"
    check_int(f, "f (the number of Byzantine clients tolerated)", name, minimum=0)
    check_bool(exact, "exact", name)
    _check_updates(updates, name)
    mask, dist = _finite_pairwise_sq_distances(updates, finite, name, float64=exact)
    k = _count_finite(mask, 1, name)
    if f >= k:
        raise ValueError(f"{name} needs K > f finite clients: f={f}, got K={k}; lower f or add clients")
    dist.fill_diagonal_(-1.0)                      # each row is its own nearest neighbour, whatever the ties
    nearest = torch.sort(dist, dim=1, stable=True).indices[:, :k - f]
    mixing = torch.zeros(k, k, dtype=torch.float64, device=dist.device)
    mixing.scatter_(1, nearest, 1.0 / (k - f))
    return mixing, mask


def nnm(updates: Tensor, f: int, *, finite: Tensor | None = None, exact: bool = True) -> Tensor:
    """Nearest-neighbour mixing (Allouah et al., AISTATS 2023, Algorithm 1): each finite row replaced by
    the mean of its ``K - f`` nearest finite rows, itself included. Returns ``[K_f, N]``. ``exact=False``:
    see :func:`nnm_weights`."""
    mixing, mask = _nnm_weights(updates, f, finite, exact)
    values = _finite_values(updates, mask)
    return mixing.to(values.dtype) @ values


def arc_clip_count(k: int, f: int) -> int:
    """How many rows ARC clips: ``floor(2 (f / K) (K - f))``, in integer arithmetic (no float rounding)."""
    return (2 * f * (k - f)) // k if k > 0 else 0


def arc_scales(updates: Tensor, f: int, *, finite: Tensor | None = None) -> Tensor:
    """``[K_f]`` float64 factors ARC multiplies the finite rows by (1 for the rows it leaves alone)."""
    return _arc_scales(updates, f, finite)[0]


def _arc_scales(updates: Tensor, f: int, finite: Tensor | None) -> tuple[Tensor, Tensor]:
    """``(arc_scales, finite mask)``: the rows' norms double as the scan for non-finite rows."""
    name = "arc"
    check_int(f, "f (the number of Byzantine clients tolerated)", name, minimum=0)
    _check_updates(updates, name)
    mask, sq_norms = _finite_sq_distances(updates, finite, name)
    k = _count_finite(mask, 1, name)
    MAJORITY.check(k, f, name)          # ARC's guarantee (and its clip count) assumes f < K / 2
    clipped = arc_clip_count(k, f)
    scales = [1.0] * k
    if clipped:
        # K floats: in Python, a few microseconds against a dozen tensor ops (ARC's calls are short)
        norms = sq_norms.sqrt().tolist()
        largest_first = sorted(range(k), key=lambda row: -norms[row])          # stable: ties in row order
        bound = norms[largest_first[clipped]]
        for row in largest_first[:clipped]:
            if norms[row] > bound:
                scales[row] = bound / max(norms[row], 1e-300)
    return torch.tensor(scales, dtype=torch.float64, device=updates.device), mask


def arc(updates: Tensor, f: int, *, finite: Tensor | None = None, inplace: bool = False) -> Tensor:
    """Adaptive robust clipping (Allouah et al. 2024, "The vital role of gradient clipping in
    Byzantine-resilient distributed learning", Algorithm ARC): with ``k = floor(2 (f / K) (K - f))``,
    the ``k`` largest-norm rows are clipped to the norm of the ``(k + 1)``-th largest; ``[K_f, N]``.
    Needs ``K > 2f`` finite clients.

    ``inplace=True`` scales only the clipped rows, in ``updates`` itself when every row is finite (as
    ByzFL's ARC does), and returns it: one read of the input instead of a read and a ``[K, N]`` write.
    The values are the same bit for bit.
    """
    check_bool(inplace, "inplace", "arc")
    scales, mask = _arc_scales(updates, f, finite)
    values = _finite_values(updates, mask)
    scales = scales.to(values.dtype)
    if not inplace:
        return values * scales.unsqueeze(1)
    for row in torch.nonzero(scales != 1).flatten().tolist():     # at most 2f rows, each scaled where it lies
        values[row].mul_(scales[row])
    return values
