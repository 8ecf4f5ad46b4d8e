"""Means and coordinate-wise order statistics: FedAvg, median, trimmed mean, repeated median."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from fl_lightning.aggregators.functional._base import (
    _WIDE_CHUNK_ELEMENTS, _all_or_mask, _check_updates, _finite_mask, _finite_weights, _map_columns,
    _weighted_rows,
)
from fl_lightning.aggregators.functional._order import (
    _NETWORK_MAX, _SORT_NETWORK_MAX, _median0, _order_statistics, _run_network, _selection_network,
    _stable_sort0,
)
from fl_lightning.aggregators.functional._rules import MAJORITY
from fl_lightning.checks import check_int, check_number, check_optional_int


def fedavg(updates: Tensor, weights: Tensor | None = None, *, finite: Tensor | None = None) -> Tensor:
    """Weighted mean of the finite rows (McMahan et al. 2017); ``weights`` e.g. sample counts."""
    mask = _finite_mask(updates, "fedavg", finite)
    return _weighted_rows(_finite_weights(weights, mask, "fedavg"), updates, _all_or_mask(mask))


def coordinate_median(updates: Tensor, *, chunk_size: int | None = None,
                      finite: Tensor | None = None) -> Tensor:
    """Coordinate-wise median of the finite rows (Yin et al. 2018); even K: mean of the two middle values."""
    check_optional_int(chunk_size, "chunk_size", "coordinate_median", minimum=1)
    mask = _finite_mask(updates, "coordinate_median", finite)
    out = torch.empty(updates.shape[1], dtype=updates.dtype, device=updates.device)
    return _map_columns(updates, _all_or_mask(mask), 8 * updates.shape[0], chunk_size, out,
                        lambda chunk: _median0(chunk, scratch=True), target_elements=_WIDE_CHUNK_ELEMENTS,
                        threading=_order_threading(int(mask.sum())))


def _order_threading(k: int) -> str:
    """Comparator networks (up to :data:`_NETWORK_MAX` rows) issue many small ops; beyond, one large op."""
    return "serial" if k <= _NETWORK_MAX else "torch"


def trimmed_count(k: int, beta: float | None = None, f: int | None = None, owner: str = "trimmed_mean") -> int:
    """Values dropped at each end of a column of ``k``: ``f``, or ``floor(beta K)`` (default ``beta = 0.2``).

    ``beta K`` is floored with a relative tolerance of ``1e-9``, so ``beta = f / K`` written as a float
    (``1 / 49 * 49`` is just under 1) trims ``f`` as meant. ``ValueError`` when ``2 * count >= K``.
    """
    if beta is not None and f is not None:
        raise ValueError(f"{owner}: give beta (a share) or f (a count of clients), not both")
    if f is not None:
        check_int(f, "f (the values trimmed at each end)", owner, minimum=0)
        if 2 * f >= k:
            raise ValueError(f"{owner} needs K > 2f finite clients: with f={f} that is at least {2 * f + 1}, "
                             f"got K={k}; lower f or add clients")
        return f
    beta = 0.2 if beta is None else beta
    check_trim_share(beta, owner)
    return int(math.floor(beta * k * (1 + 1e-9)))


def check_trim_share(beta: float, owner: str) -> float:
    """``beta`` if it is a number in ``[0, 0.5)`` (the share trimmed at each end)."""
    return check_number(beta, "beta (the share trimmed at each end)", owner, low=0.0, high=0.5,
                        high_inclusive=False)


def trimmed_mean(updates: Tensor, beta: float | None = None, *, f: int | None = None,
                 chunk_size: int | None = None, finite: Tensor | None = None) -> Tensor:
    """Coordinate-wise trimmed mean (Yin et al. 2018, Definition 2): drop the ``b`` smallest and ``b``
    largest values of each coordinate and average the rest.

    ``b = floor(beta K)`` (``beta`` defaults to 0.2; see :func:`trimmed_count` for the rounding) or
    ``b = f`` when the count ``f`` is given instead. When nothing is dropped it is the plain mean
    (the reference returns NaN there).
    """
    name = "trimmed_mean"
    _check_updates(updates, name)
    check_optional_int(chunk_size, "chunk_size", name, minimum=1)
    if beta is not None:
        check_trim_share(beta, name)
    mask = _finite_mask(updates, name, finite)
    k = int(mask.sum())
    drop = trimmed_count(k, beta, f, name)
    if drop == 0:
        return fedavg(updates, finite=mask)
    out = torch.empty(updates.shape[1], dtype=updates.dtype, device=updates.device)
    return _map_columns(updates, _all_or_mask(mask), 16 * k, chunk_size, out,
                        lambda chunk: _trimmed_chunk_mean(chunk, drop), target_elements=_WIDE_CHUNK_ELEMENTS,
                        threading=_order_threading(k))


def _trimmed_chunk_mean(chunk: Tensor, drop: int) -> Tensor:
    """Mean of each column of ``chunk`` without its ``drop`` smallest and ``drop`` largest values."""
    k = chunk.shape[0]
    if k <= _SORT_NETWORK_MAX:
        # few rows: a network on the values themselves, pruned to the kept ranks (chunk is scratch)
        kept = _run_network(list(chunk.unbind(0)), _selection_network(k, tuple(range(drop, k - drop))))
        return torch.stack(kept[drop:k - drop]).mean(dim=0)
    if k <= _NETWORK_MAX:
        return _mean_between(chunk, drop)
    # many rows: sort the contiguous rows of the transpose (the values, not their order, matter here)
    return torch.sort(chunk.T.contiguous(), dim=1).values[:, drop:k - drop].mean(dim=1)


def _mean_between(chunk: Tensor, drop: int) -> Tensor:
    """The trimmed mean from two order statistics instead of a sort.

    With ``lo``/``hi`` the first and last kept values of each sorted column, the kept values are those
    strictly between them plus ``#(v <= lo) - drop`` copies of ``lo`` and ``K - drop - #(v < hi)``
    copies of ``hi`` (all ``K - 2 drop`` kept values are ``lo`` when ``lo == hi``).
    """
    k = chunk.shape[0]
    kept = k - 2 * drop
    lo, hi = _order_statistics(chunk, (drop, k - drop - 1))
    inside = (chunk > lo) & (chunk < hi)
    total = torch.where(inside, chunk, 0.0).sum(dim=0)
    lo_copies = (chunk <= lo).sum(dim=0) - drop
    hi_copies = (k - drop) - (chunk < hi).sum(dim=0)
    same = lo == hi
    lo_copies = torch.where(same, kept, lo_copies)
    hi_copies = torch.where(same, 0, hi_copies)
    return (total + lo * lo_copies + hi * hi_copies) / kept


def repeated_median(updates: Tensor, *, chunk_size: int | None = None,
                    finite: Tensor | None = None) -> Tensor:
    """Coordinate-wise repeated median (Siegel 1982) as the reference uses it: the line at the middle rank.

    The reference's line has ``intercept = med(y) - slope (K - 1) / 2``, so its value at the middle
    rank ``(K - 1) / 2`` is the coordinate median whatever the slope; it is computed as such, without
    the ``O(K^2)`` slope (see :func:`robust_line` for the line itself).
    """
    return coordinate_median(updates, chunk_size=chunk_size, finite=finite)



def meamed(updates: Tensor, f: int, *, chunk_size: int | None = None, finite: Tensor | None = None) -> Tensor:
    """Mean around the median (Xie et al. 2018, "Generalized Byzantine-tolerant SGD", Definition 5):
    per coordinate, the mean of the ``K - f`` values closest to the coordinate median.

    The median of an even count is the mean of the two middle values; equal distances are broken by
    row index. Needs ``K > 2f`` finite clients.
    """
    name = "meamed"
    check_int(f, "f (the number of Byzantine clients tolerated)", name, minimum=0)
    check_optional_int(chunk_size, "chunk_size", name, minimum=1)
    _check_updates(updates, name)
    mask = _finite_mask(updates, name, finite)
    k = int(mask.sum())
    MAJORITY.check(k, f, name)
    keep = k - f

    def closest_mean(chunk: Tensor) -> Tensor:
        closest = _stable_sort0((chunk - _median0(chunk)).abs())[1][:keep]
        return torch.gather(chunk, 0, closest).mean(dim=0)

    out = torch.empty(updates.shape[1], dtype=updates.dtype, device=updates.device)
    return _map_columns(updates, _all_or_mask(mask), 24 * k, chunk_size, out, closest_mean)
