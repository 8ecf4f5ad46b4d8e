"""Order statistics along dim 0: pruned selection networks, medians and a stable sort of few rows."""
from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor


#: selection networks are used up to this many values; beyond, ``torch.kthvalue``/``torch.sort``
_NETWORK_MAX = 256


#: columns are sorted by a network on int64 keys up to this many rows, by ``torch.sort`` beyond
_SORT_NETWORK_MAX = 32


@lru_cache(maxsize=None)
def _selection_network(n: int, outputs: tuple[int, ...]) -> tuple[tuple[int, int, bool, bool], ...]:
    """Batcher's odd-even merge sort on ``n`` wires, pruned to the comparators ``outputs`` depend on.

    Each entry ``(a, b, need_min, need_max)`` compares wires ``a < b`` and leaves the smaller value on
    ``a``; ``need_min``/``need_max`` say which of the two results is still read later. Wires beyond
    ``n`` would hold ``+inf`` and never move, so their comparators are dropped. The comparators come in
    depth-first order (each half sorted wholly before the merge): the same network as layer by layer,
    but the deep sorts touch a few wires in a row, whose rows stay in the cache (1.1-1.4x on 100 wires).
    """
    size = 1
    while size < n:
        size *= 2
    comparators: list[tuple[int, int]] = []

    def merge(low: int, length: int, stride: int) -> None:
        if 2 * stride < length:
            merge(low, length, 2 * stride)
            merge(low + stride, length, 2 * stride)
            comparators.extend((i, i + stride) for i in range(low + stride, low + length - stride, 2 * stride))
        else:
            comparators.append((low, low + stride))

    def sort(low: int, length: int) -> None:
        if length > 1:
            sort(low, length // 2)
            sort(low + length // 2, length // 2)
            merge(low, length, 1)

    sort(0, size)
    needed, kept = set(outputs), []
    for a, b in reversed(comparators):
        if b < n and (a in needed or b in needed):
            kept.append((a, b, a in needed, b in needed))
            needed.update((a, b))
    return tuple(reversed(kept))


@lru_cache(maxsize=None)
def _network_ops(n: int, ranks: tuple[int, ...]) -> int:
    return sum(need_min + need_max for _, _, need_min, need_max in _selection_network(n, ranks))


def _run_network(rows: list[Tensor], network: tuple[tuple[int, int, bool, bool], ...]) -> list[Tensor]:
    """Apply a comparator network in place to ``rows`` (equal-shaped tensors the caller owns)."""
    spare: Tensor | None = None
    for a, b, need_min, need_max in network:
        lo, hi = rows[a], rows[b]
        if need_min and need_max:
            if spare is None:
                spare = torch.empty_like(lo)
            torch.minimum(lo, hi, out=spare)
            torch.maximum(lo, hi, out=hi)
            rows[a], spare = spare, lo
        elif need_min:
            torch.minimum(lo, hi, out=lo)
        else:
            torch.maximum(lo, hi, out=hi)
    return rows


def _order_statistics(values: Tensor, ranks: tuple[int, ...], scratch: bool = False) -> list[Tensor]:
    """The ``ranks``-th smallest (0-based) entries along dim 0 of ``values``.

    A pruned selection network (vectorised min/max across the other dims, no per-element branches)
    when that is cheaper than ``torch.kthvalue`` by a simple cost model of both; with ``scratch=True``
    the network may overwrite ``values``.
    """
    n = values.shape[0]
    wanted = tuple(sorted(set(ranks)))
    row = values[0].numel()
    if n <= _NETWORK_MAX:
        network_cost = _network_ops(n, wanted) * (1.5e-6 + row * 0.15e-9)
        kth_cost = len(wanted) * n * row * 15e-9
    if n > _NETWORK_MAX or kth_cost < network_cost:
        return [torch.kthvalue(values, r + 1, dim=0).values for r in ranks]
    if not scratch:
        values = values.clone()
    rows = _run_network(list(values.unbind(0)), _selection_network(n, wanted))
    return [rows[r] for r in ranks]


def _middle_pair_of_rows(rows: Tensor, lo_rank: int, both: bool) -> tuple[Tensor, Tensor | None]:
    """The ``lo_rank``-th and (with ``both``) next smallest (0-based) values of each row of ``[c, n]`` ``rows``.

    One partial selection per row (``topk`` of the ``lo_rank + 1`` or ``+ 2`` smallest, unsorted, then
    the largest one or two of those): the values a full sort would put at those ranks, ties included.
    """
    count = lo_rank + (2 if both else 1)
    smallest = torch.topk(rows, count, dim=1, largest=False, sorted=False).values
    if not both:
        return smallest.amax(dim=1), None
    top_two = torch.topk(smallest, 2, dim=1).values
    return top_two[:, 1], top_two[:, 0]


def _median0(values: Tensor, scratch: bool = False, skip_smallest: int = 0, skip_largest: int = 0) -> Tensor:
    """Median along dim 0 (mean of the two middle values for an even count).

    ``skip_smallest`` / ``skip_largest`` leave out that many smallest / largest values first (the
    reference's scale skips the smallest residual).
    """
    m = values.shape[0] - skip_smallest - skip_largest
    lo_rank, hi_rank = skip_smallest + (m - 1) // 2, skip_smallest + m // 2
    if values.shape[0] > _NETWORK_MAX:
        # many values: select along contiguous rows of the transpose (strided selection along dim 0 is slower)
        rows = values.reshape(values.shape[0], -1).T.contiguous()
        lo, hi = _middle_pair_of_rows(rows, lo_rank, hi_rank != lo_rank)
        middle = lo if hi is None else (lo + hi) / 2
        return middle.reshape(values.shape[1:])
    if lo_rank == hi_rank:
        return _order_statistics(values, (lo_rank,), scratch)[0]
    lo, hi = _order_statistics(values, (lo_rank, hi_rank), scratch)
    return (lo + hi) / 2


def _sorted_median(ys: Tensor) -> Tensor:
    """Median along dim 0 of values already sorted along it."""
    k = ys.shape[0]
    return (ys[(k - 1) // 2] + ys[k // 2]) / 2 if k % 2 == 0 else ys[k // 2].clone()


def _stable_sort0(block: Tensor) -> tuple[Tensor, Tensor]:
    """Sort along dim 0, ties in row order: ``(sorted values, row index of each sorted value)``.

    For float32 and few rows a sorting network on int64 keys (order-preserving bits of the value,
    row index in the low half) beats ``torch.sort`` several times: keys are distinct, so plain min/max
    sorts them stably, and the payload rides along for free.
    """
    k = block.shape[0]
    if block.dtype != torch.float32 or k > _SORT_NETWORK_MAX:
        return torch.sort(block, dim=0, stable=True)
    bits = (block + 0.0).view(torch.int32)                   # + 0.0 turns -0.0 into +0.0: they tie
    bits = bits ^ ((bits >> 31) & 0x7FFFFFFF)                 # negative floats: reverse their order
    keys = (bits.to(torch.int64) << 32) | torch.arange(k, dtype=torch.int64, device=block.device).unsqueeze(1)
    rows = _run_network(list(keys.unbind(0)), _selection_network(k, tuple(range(k))))
    keys = torch.stack(rows)
    order = keys & 0xFFFFFFFF
    bits = (keys >> 32).to(torch.int32)
    bits = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    return bits.view(torch.float32), order

