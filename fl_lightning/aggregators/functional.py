"""Pure maths of every aggregation rule on a ``[K, N]`` matrix of client updates (one row per client).

Every function takes the stacked updates ``u`` of shape ``[K, N]`` and returns the ``[N]`` aggregate
(``foolsgold_weights`` returns ``[K]`` weights). Rows holding NaN or Inf are excluded before
anything else. Work is done in chunks of columns so the extra memory stays a small multiple of the
input; ``chunk_size`` overrides the number of columns per chunk where a function accepts it.

Medians follow the statistics convention (the mean of the two middle values for an even count), as
the reference implementation of residual reweighting does. The column-wise rules run many small ops
per chunk: they use one intra-op thread each and spread whole chunks over threads instead, which
keeps them fast on a machine whose cores are shared.
"""
from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import lru_cache
from typing import Callable, Iterator, NamedTuple, TypeVar

import torch
from torch import Tensor

__all__ = [
    "ESTIMATORS", "VARIANTS", "WEIGHTINGS",
    "KrumRanking", "LineFit", "ResidualReweightDetails", "ResidualReweightResult", "WeiszfeldResult",
    "bulyan", "bulyan_selection", "centered_clipping", "check_residual_reweight_options", "coordinate_median",
    "fedavg", "finite_rows", "foolsgold_weights", "geometric_median", "krum", "krum_ranking", "krum_scores",
    "krum_select", "norm_clipping", "repeated_median", "residual_reweight", "residual_reweight_details",
    "robust_line", "row_distances", "trimmed_mean", "weiszfeld",
]

#: line estimators of residual reweighting (ALGORITHM.md section 2, Table 7 of the paper)
ESTIMATORS = ("repeated_median", "theil_sen", "median")
#: confidence functions: Huber/IRLS (eq. 6) or a zero-mean Gaussian of the normalised residual
WEIGHTINGS = ("huber", "gaussian")
#: ``"reference"``: the authors' published behaviour; ``"paper"``: Algorithm 1 as printed
VARIANTS = ("reference", "paper")

_MIB = 1 << 20
#: selection networks are used up to this many values; beyond, ``torch.kthvalue``/``torch.sort``
_NETWORK_MAX = 128
#: elements of one ``[K, chunk]`` op: large enough to hide per-op overhead, small enough for the caches
_TARGET_ROW_ELEMENTS = 65536
#: columns are sorted by a network on int64 keys up to this many rows, by ``torch.sort`` beyond
_SORT_NETWORK_MAX = 32


# --------------------------------------------------------------------------- input checks


def _check_updates(updates: Tensor, name: str) -> Tensor:
    if not isinstance(updates, Tensor):
        raise TypeError(f"{name}: updates must be a torch.Tensor of shape [K, N], got {type(updates).__name__}")
    if updates.dim() != 2:
        raise ValueError(f"{name}: updates must have shape [K, N] (one row per client), "
                         f"got shape {tuple(updates.shape)}")
    if not updates.is_floating_point():
        raise ValueError(f"{name}: updates must be floating point, got {updates.dtype}; call .float() first")
    return updates


def _check_chunk_size(chunk_size: int | None, name: str) -> None:
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                   or chunk_size < 1):
        raise ValueError(f"{name}: chunk_size must be a positive int or None, got {chunk_size!r}")


def _require_finite(updates: Tensor, needed: int, name: str) -> tuple[Tensor, Tensor]:
    """The finite rows of ``updates`` and their mask; ``ValueError`` if fewer than ``needed``."""
    mask = finite_rows(updates)
    count = int(mask.sum())
    if count < needed:
        raise ValueError(f"{name} needs K >= {needed} finite clients, got {count}"
                         + (f" ({updates.shape[0] - count} of {updates.shape[0]} rows hold NaN/Inf)"
                            if count < updates.shape[0] else ""))
    return (updates if count == updates.shape[0] else updates[mask]), mask


def finite_rows(updates: Tensor) -> Tensor:
    """``[K]`` bool: the clients whose whole update is finite (checked chunk by chunk)."""
    _check_updates(updates, "finite_rows")
    k, n = updates.shape
    mask = torch.ones(k, dtype=torch.bool, device=updates.device)
    step = max(1, (64 * _MIB) // max(1, k))
    for start in range(0, n, step):
        mask &= torch.isfinite(updates[:, start:start + step]).all(dim=1)
    return mask


def _chunk_columns(k: int, n: int, bytes_per_column: int, chunk_size: int | None) -> int:
    """Columns per chunk: ``chunk_size`` if given, else ``[K, chunk]`` ops of about
    ``_TARGET_ROW_ELEMENTS`` values, capped so one chunk's scratch stays within half the input's
    size (at least 4 MiB, at most 64 MiB): two workers' chunks then fit in one more input's worth.
    """
    if chunk_size is not None:
        return max(1, min(chunk_size, n))
    budget = min(max(2 * k * n, 4 * _MIB), 64 * _MIB)
    by_budget = max(1, budget // max(1, bytes_per_column))
    by_cache = max(64, _TARGET_ROW_ELEMENTS // max(1, k))
    return max(1, min(n, by_budget, by_cache))


_T = TypeVar("_T")


@contextmanager
def _single_threaded_ops() -> Iterator[int]:
    """Run torch ops on one intra-op thread; yields the previous thread count.

    The chunked rules issue thousands of small ops; each parallel region costs a barrier, and on a
    busy machine a barrier waits for a descheduled thread. Parallelism comes from whole chunks
    instead (:func:`_map_chunks`).
    """
    previous = torch.get_num_threads()
    if previous == 1:
        yield previous
        return
    torch.set_num_threads(1)
    try:
        yield previous
    finally:
        torch.set_num_threads(previous)


#: inputs smaller than this run on one worker: thread start-up and per-thread allocator arenas
#: would cost more time and memory than they save
_PARALLEL_MIN_BYTES = 16 * _MIB


def _map_chunks(work: Callable[[list[int]], _T], starts: list[int], workers: int, input_bytes: int) -> list[_T]:
    """``work`` over contiguous runs of chunk ``starts``, on up to ``workers`` threads (ops release the GIL)."""
    workers = max(1, min(workers, len(starts) // 4)) if input_bytes >= _PARALLEL_MIN_BYTES else 1
    if workers == 1:
        return [work(starts)]
    size = -(-len(starts) // workers)
    runs = [starts[i:i + size] for i in range(0, len(starts), size)]
    with ThreadPoolExecutor(len(runs)) as pool:
        return list(pool.map(work, runs))


# --------------------------------------------------------------------------- order statistics


@lru_cache(maxsize=None)
def _selection_network(n: int, outputs: tuple[int, ...]) -> tuple[tuple[int, int, bool, bool], ...]:
    """Batcher's odd-even merge sort on ``n`` wires, pruned to the comparators ``outputs`` depend on.

    Each entry ``(a, b, need_min, need_max)`` compares wires ``a < b`` and leaves the smaller value on
    ``a``; ``need_min``/``need_max`` say which of the two results is still read later. Wires beyond
    ``n`` would hold ``+inf`` and never move, so their comparators are dropped.
    """
    size = 1
    while size < n:
        size *= 2
    comparators = []
    span = 1
    while span < size:
        step = span
        while step >= 1:
            for start in range(step % span, size - step, 2 * step):
                for i in range(min(step, size - start - step)):
                    a, b = start + i, start + i + step
                    if a // (2 * span) == b // (2 * span) and b < n:
                        comparators.append((a, b))
            step //= 2
        span *= 2
    needed, kept = set(outputs), []
    for a, b in reversed(comparators):
        if a in needed or b in needed:
            kept.append((a, b, a in needed, b in needed))
            needed.update((a, b))
    return tuple(reversed(kept))


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


def _median0(values: Tensor, scratch: bool = False, skip_smallest: int = 0, skip_largest: int = 0) -> Tensor:
    """Median along dim 0 (mean of the two middle values for an even count).

    ``skip_smallest`` / ``skip_largest`` leave out that many smallest / largest values first (the
    reference's scale skips the smallest residual).
    """
    m = values.shape[0] - skip_smallest - skip_largest
    lo_rank, hi_rank = skip_smallest + (m - 1) // 2, skip_smallest + m // 2
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


# --------------------------------------------------------------------------- robust lines


class LineFit(NamedTuple):
    """A robust line per column, ``value = intercept + slope * rank`` with ranks ``0..K-1``."""

    intercept: Tensor
    slope: Tensor


def _check_choice(value: str, valid: tuple[str, ...], what: str, name: str) -> None:
    if value not in valid:
        raise ValueError(f"{name}: unknown {what} {value!r}; valid: {', '.join(valid)}")


def _pairwise_slopes_by_row(ys: Tensor) -> Tensor:
    """``[K (j), K (i), c]`` slopes ``(y_j - y_i) / (j - i)`` of sorted columns ``ys``; ``+inf`` where j == i."""
    k = ys.shape[0]
    slopes = ys.unsqueeze(1) - ys.unsqueeze(0)
    slopes.div_(_rank_gaps(k, ys.dtype, ys.device))
    slopes.diagonal(dim1=0, dim2=1).fill_(math.inf)
    return slopes


@lru_cache(maxsize=64)
def _rank_gaps(k: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``[K, K, 1]`` rank differences ``j - i`` (1 on the diagonal, which is overwritten anyway)."""
    ranks = torch.arange(k, dtype=dtype, device=device)
    return (ranks.view(k, 1) - ranks.view(1, k)).fill_diagonal_(1.0).unsqueeze(-1)


def _line_of_sorted(ys: Tensor, estimator: str, variant: str) -> tuple[Tensor, Tensor]:
    """``(intercept [c], slope [c])`` of the sorted ``[K, c]`` columns ``ys`` (x = ranks 0..K-1).

    Repeated median (Siegel 1982, paper eq. 1): ``slope = med_i med_{j != i} (y_j - y_i) / (j - i)``.
    Theil-Sen: the median of all ``K (K - 1) / 2`` pairwise slopes. Median: slope 0. The reference
    takes ``intercept = med(y) - slope (K - 1) / 2``; the paper's text ``med_i (y_i - slope i)``.
    """
    k = ys.shape[0]
    center = _sorted_median(ys)
    if estimator == "median":
        return center, torch.zeros_like(center)
    if estimator == "repeated_median":
        # the diagonal's +inf is the largest entry of each row: the inner median over j != i is the
        # median of the K values without their largest
        inner = _median0(_pairwise_slopes_by_row(ys), scratch=True, skip_largest=1)
        slope = _median0(inner, scratch=True)
    else:  # theil_sen
        first, second = torch.triu_indices(k, k, offset=1, device=ys.device)
        gaps = (second - first).to(ys.dtype).unsqueeze(-1)
        slope = _median0((ys[second] - ys[first]) / gaps, scratch=True)
    if variant == "reference":
        return center - slope * ((k - 1) / 2), slope
    ranks = torch.arange(k, dtype=ys.dtype, device=ys.device).unsqueeze(-1)
    return _median0(ys - slope * ranks, scratch=True), slope


def robust_line(updates: Tensor, *, estimator: str = "repeated_median", variant: str = "reference",
                chunk_size: int | None = None) -> LineFit:
    """The robust line residual reweighting fits to each column's (rank, sorted value) points.

    Non-finite rows are ignored. A client's fitted value is ``intercept + slope * rank`` where rank is
    its position in the column sorted ascending (ties in client order).
    """
    name = "robust_line"
    _check_updates(updates, name)
    _check_choice(estimator, ESTIMATORS, "estimator", name)
    _check_choice(variant, VARIANTS, "variant", name)
    _check_chunk_size(chunk_size, name)
    mask = finite_rows(updates)
    k = int(mask.sum())
    if k < 2:
        raise ValueError(f"{name} needs K >= 2 finite clients, got {k}")
    out = torch.empty(2, updates.shape[1], dtype=updates.dtype, device=updates.device)
    _map_columns(updates, _all_or_mask(mask), _rr_bytes_per_column(k, estimator), chunk_size, out,
                 lambda chunk: torch.stack(_line_of_sorted(_stable_sort0(chunk)[0], estimator, variant)))
    return LineFit(out[0], out[1])


# --------------------------------------------------------------------------- residual reweighting


class ResidualReweightResult(NamedTuple):
    """``aggregate [N]`` and ``client_weights [K]`` (>= 0, sum 1, 0 for non-finite rows)."""

    aggregate: Tensor
    client_weights: Tensor


class ResidualReweightDetails(NamedTuple):
    """:func:`residual_reweight` plus what the round loop logs about it.

    ``raw_scores [K]``: per-client score before normalisation (paper eq. 10; 0 for dropped rows);
    ``mean_confidence [K]``: each client's mean parameter confidence; ``replaced_fraction``: share of
    the finite clients' values replaced by the line value (extreme value correction, eq. 9).
    """

    aggregate: Tensor
    client_weights: Tensor
    raw_scores: Tensor
    mean_confidence: Tensor
    replaced_fraction: float


def _rr_bytes_per_column(k: int, estimator: str) -> int:
    pairs = {"repeated_median": k * k, "theil_sen": k * (k - 1) // 2, "median": 0}[estimator]
    return 4 * (pairs + pairs // 4 + 24 * k)


def _leverage_factor(k: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``sqrt(1 - h_kk)`` at each rank of the design ``[1, rank]`` (ALGORITHM.md step 6), shape ``[K, 1]``."""
    ranks = torch.arange(k, dtype=torch.float64, device=device)
    centred = ranks - (k - 1) / 2
    hat = 1 / k + centred ** 2 / (centred ** 2).sum()
    return torch.sqrt(1 - hat).to(dtype=dtype, device=device).unsqueeze(-1)


def check_residual_reweight_options(lambda_: float, thresh: float, estimator: str, weighting: str,
                                    variant: str, chunk_size: int | None,
                                    name: str = "residual_reweight") -> None:
    """``ValueError`` naming the first invalid hyper-parameter of residual reweighting."""
    _check_choice(estimator, ESTIMATORS, "estimator", name)
    _check_choice(weighting, WEIGHTINGS, "weighting", name)
    _check_choice(variant, VARIANTS, "variant", name)
    if isinstance(lambda_, bool) or not isinstance(lambda_, (int, float)) or not lambda_ > 0 \
            or not math.isfinite(lambda_):
        raise ValueError(f"{name}: lambda_ must be a finite number > 0 (the paper uses 2), got {lambda_!r}")
    if isinstance(thresh, bool) or not isinstance(thresh, (int, float)) or not 0 <= thresh <= 1:
        raise ValueError(f"{name}: thresh must be a number in [0, 1] (the paper uses 0.01 to 0.2), "
                         f"got {thresh!r}")
    _check_chunk_size(chunk_size, name)


class _Corrections:
    """``value - original`` of the values replaced by the line (eq. 9), per client and column.

    One ``[K, N]`` buffer, created at the first replaced value and filled only where values are
    replaced: per-chunk pieces kept alive between the chunks' large temporaries fragment the heap
    and cost many times their size.
    """

    def __init__(self, k: int, n: int, dtype: torch.dtype, device: torch.device) -> None:
        self.shape, self.dtype, self.device = (k, n), dtype, device
        self.delta: Tensor | None = None
        self._lock = threading.Lock()

    def add(self, start: int, replaced: Tensor, order: Tensor, delta_sorted: Tensor) -> None:
        """Record the replaced entries of the sorted chunk starting at column ``start``."""
        with self._lock:
            if self.delta is None:
                self.delta = torch.zeros(self.shape, dtype=self.dtype, device=self.device)
        position, column = replaced.nonzero(as_tuple=True)
        self.delta[order[position, column], column + start] = delta_sorted[position, column]

    def weighted(self, weights: Tensor) -> Tensor | None:
        """``sum_k weights[k] * delta[k, n]`` for every column ``n`` (None when nothing was replaced)."""
        return None if self.delta is None else weights @ self.delta


class _ChunkTotals:
    """What one worker accumulates over its chunks of columns."""

    def __init__(self, k: int, device: torch.device) -> None:
        self.scores = torch.zeros(k, dtype=torch.float64, device=device)
        self.confidence = torch.zeros(k, dtype=torch.float64, device=device)
        self.replaced = 0


def residual_reweight_details(updates: Tensor, *, lambda_: float = 2.0, thresh: float = 0.1,
                              estimator: str = "repeated_median", weighting: str = "huber",
                              variant: str = "reference", chunk_size: int | None = None,
                              skip_columns: Tensor | None = None) -> ResidualReweightDetails:
    """:func:`residual_reweight` with its diagnostics (see :class:`ResidualReweightDetails`).

    ``skip_columns`` (bool ``[N]``) marks columns that take no part in the confidences and are never
    corrected, only averaged with the final weights: the reference does this for 0-dim tensors.
    """
    name = "residual_reweight"
    _check_updates(updates, name)
    check_residual_reweight_options(lambda_, thresh, estimator, weighting, variant, chunk_size)
    k_all, n = updates.shape
    if skip_columns is not None and (skip_columns.dtype != torch.bool or tuple(skip_columns.shape) != (n,)):
        raise ValueError(f"{name}: skip_columns must be a bool tensor of shape ({n},), "
                         f"got {skip_columns.dtype} of shape {tuple(skip_columns.shape)}")
    values, finite = _require_finite(updates, 3, name)
    k = values.shape[0]
    dtype, device = values.dtype, values.device
    paper = variant == "paper"
    bound = lambda_ * math.sqrt(2 / k) * _leverage_factor(k, dtype, device)   # Z sqrt(1 - h) per rank
    scale = (1.48 if paper else 1.4826) * (1 + 5 / (k - 1))
    ranks = torch.arange(k, dtype=dtype, device=device).unsqueeze(-1)
    step = _chunk_columns(k, n, _rr_bytes_per_column(k, estimator), chunk_size)

    corrections = _Corrections(k, n, dtype, device)

    def work(starts: list[int]) -> _ChunkTotals:
        totals = _ChunkTotals(k, device)
        for start in starts:
            stop = min(n, start + step)
            ys, order = _stable_sort0(values[:, start:stop])
            intercept, slope = _line_of_sorted(ys, estimator, variant)
            fit = slope * ranks + intercept
            residual = ys - fit
            abs_res = residual.abs()
            if paper:
                tau = scale * _median0(abs_res)                               # eq. 3-4
            else:
                tau = scale * _median0(abs_res, skip_smallest=1) + 1e-7
            if weighting == "huber":
                # eq. 6: sqrt(1-h)/e * psi(e/sqrt(1-h)) = min(1, Z sqrt(1-h) tau / |r|); 0/0 gives 1
                conf = torch.div(bound * tau, abs_res).nan_to_num_(nan=1.0).clamp_(max=1.0)
            else:
                conf = torch.div(residual, tau).square_().mul_(-0.5 / lambda_ ** 2).exp_().nan_to_num_(nan=1.0)
            replaced = conf <= thresh if paper else conf < thresh
            if skip_columns is not None:
                skip = skip_columns[start:stop]
                if bool(skip.any()):
                    replaced &= ~skip
                    conf.masked_fill_(skip, 0.0)
            if paper:
                conf.masked_fill_(replaced, 0.0)                              # eq. 8
            count = int(replaced.sum())
            if count:
                totals.replaced += count
                corrections.add(start, replaced, order, fit - ys)              # eq. 9
            # eq. 10: each confidence counts with the spread (unbiased std) of its column's confidences
            centred = conf - conf.mean(dim=0)
            spread = centred.square_().sum(dim=0).div_(k - 1).sqrt_()
            flat_order = order.reshape(-1)
            totals.scores += torch.bincount(flat_order, weights=(conf * spread).reshape(-1), minlength=k)
            totals.confidence += torch.bincount(flat_order, weights=conf.reshape(-1), minlength=k)
        return totals

    with _single_threaded_ops() as threads:
        parts = _map_chunks(work, list(range(0, n, step)), threads, values.numel() * values.element_size())
    scores = sum(part.scores for part in parts)
    weights = _normalise_scores(scores, paper).to(dtype)
    aggregate = weights @ values                                                  # eq. 11
    correction = corrections.weighted(weights)
    if correction is not None:
        aggregate += correction
    full_weights = torch.zeros(k_all, dtype=dtype, device=device)
    full_weights[finite] = weights
    full_scores = torch.zeros(k_all, dtype=dtype, device=device)
    full_scores[finite] = scores.to(dtype)
    scored_columns = n - (int(skip_columns.sum()) if skip_columns is not None else 0)
    mean_conf = torch.zeros(k_all, dtype=dtype, device=device)
    mean_conf[finite] = (sum(part.confidence for part in parts) / max(1, scored_columns)).to(dtype)
    replaced_fraction = sum(part.replaced for part in parts) / max(1, k * scored_columns)
    return ResidualReweightDetails(aggregate.to(updates.dtype), full_weights, full_scores, mean_conf,
                                   replaced_fraction)


def _normalise_scores(scores: Tensor, paper: bool) -> Tensor:
    """Per-client weights summing to 1 from the raw scores (uniform when every score is 0).

    The paper normalises ``W / sum W`` (eq. 11); the reference first divides by the largest score and
    squares, which sharpens the gap between trusted and distrusted clients.
    """
    k = scores.numel()
    top = scores.max()
    if not top > 0:
        return torch.full_like(scores, 1 / k)
    weights = scores / scores.sum() if paper else (scores / top) ** 2
    return weights / weights.sum()


def residual_reweight(updates: Tensor, *, lambda_: float = 2.0, thresh: float = 0.1,
                      estimator: str = "repeated_median", weighting: str = "huber",
                      variant: str = "reference", chunk_size: int | None = None) -> ResidualReweightResult:
    """Residual-based reweighting (Fu et al. 2019, Algorithm 1): ``(aggregate [N], client_weights [K])``.

    Per column: a robust line through (rank, sorted value), residual confidences (eq. 3-6), extreme
    values replaced by the line (eq. 8-9), confidences weighted by their column's standard deviation
    and summed per client (eq. 10); the aggregate is the weighted mean of the corrected values (eq. 11).
    ``variant="reference"`` reproduces the published implementation (ALGORITHM.md section 3),
    ``"paper"`` the printed algorithm (section 2). Needs at least 3 finite rows.
    """
    details = residual_reweight_details(updates, lambda_=lambda_, thresh=thresh, estimator=estimator,
                                        weighting=weighting, variant=variant, chunk_size=chunk_size)
    return ResidualReweightResult(details.aggregate, details.client_weights)


# --------------------------------------------------------------------------- helpers over finite rows


def _column_chunks(values: Tensor, mask: Tensor | None,
                   bytes_per_column: int) -> Iterator[tuple[int, int, Tensor]]:
    """Yield ``(start, stop, chunk)``: the rows ``mask`` selects (all if None) of a block of columns.

    For a few large ops (matrix products, reductions): chunks of at most 32 MiB of scratch.
    """
    n = values.shape[1]
    step = max(1, min(n, (32 * _MIB) // max(1, bytes_per_column)))
    for start in range(0, n, step):
        block = values[:, start:start + step]
        yield start, min(n, start + step), (block if mask is None else block[mask])


def _map_columns(updates: Tensor, mask: Tensor | None, bytes_per_column: int, chunk_size: int | None,
                 out: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
    """``out[..., start:stop] = fn(chunk)`` for every chunk of columns of the rows ``mask`` selects.

    Each ``chunk`` is a fresh contiguous copy ``fn`` may overwrite; ops run single-threaded, chunks
    on parallel workers (see :func:`_single_threaded_ops`).
    """
    k, n = updates.shape
    rows = k if mask is None else int(mask.sum())
    step = _chunk_columns(rows, n, bytes_per_column, chunk_size)

    def work(starts: list[int]) -> None:
        for start in starts:
            block = updates[:, start:start + step]
            block = block[mask] if mask is not None else block.clone(memory_format=torch.contiguous_format)
            out[..., start:start + step] = fn(block)

    with _single_threaded_ops() as threads:
        _map_chunks(work, list(range(0, n, step)), threads, rows * n * updates.element_size())
    return out


def _all_or_mask(mask: Tensor) -> Tensor | None:
    return None if bool(mask.all()) else mask


def _weighted_rows(weights: Tensor, updates: Tensor, mask: Tensor | None) -> Tensor:
    """``weights @ updates[mask]`` without copying the selected rows all at once."""
    if mask is None:
        return weights.to(updates.dtype) @ updates
    out = torch.empty(updates.shape[1], dtype=updates.dtype, device=updates.device)
    for start, stop, chunk in _column_chunks(updates, mask, 4 * int(mask.sum())):
        out[start:stop] = weights.to(updates.dtype) @ chunk
    return out


def _row_sq_distances(updates: Tensor, mask: Tensor | None, center: Tensor | None = None) -> Tensor:
    """``[K_finite]`` float64 squared distances of the finite rows to ``center`` (to 0 if None)."""
    total = None
    for start, stop, chunk in _column_chunks(updates, mask, 8 * updates.shape[0]):
        diff = chunk if center is None else chunk - center[start:stop]
        part = diff.square().sum(dim=1, dtype=torch.float64)
        total = part if total is None else total + part
    return total


def _pairwise_sq_distances(updates: Tensor, mask: Tensor | None) -> Tensor:
    """``[K_f, K_f]`` float64 squared distances of the finite rows from one Gram matrix."""
    gram = None
    for _, _, chunk in _column_chunks(updates, mask, 16 * updates.shape[0]):
        block = chunk.double()
        part = block @ block.T
        gram = part if gram is None else gram + part
    sq = gram.diagonal()
    dist = (sq.unsqueeze(0) + sq.unsqueeze(1) - 2 * gram).clamp_min_(0).fill_diagonal_(0)
    return (dist + dist.T) / 2          # exactly symmetric: mutual nearest neighbours tie exactly


def _krum_order(scores: Tensor, dist: Tensor) -> Tensor:
    """Indices by increasing Krum score; ties (mutual nearest neighbours) by the sum of all distances.

    The second key keeps the choice independent of the clients' order.
    """
    by_total = torch.sort(dist.sum(dim=1), stable=True).indices
    return by_total[torch.sort(scores[by_total], stable=True).indices]


def row_distances(updates: Tensor, center: Tensor | None = None) -> Tensor:
    """``[K]`` L2 distance of each row to ``center`` (its norm if None); ``+inf`` for non-finite rows."""
    _check_updates(updates, "row_distances")
    mask = finite_rows(updates)
    out = torch.full((updates.shape[0],), math.inf, dtype=torch.float64, device=updates.device)
    if bool(mask.any()):
        out[mask] = _row_sq_distances(updates, _all_or_mask(mask), center).sqrt()
    return out


def _finite_mask(updates: Tensor, name: str) -> Tensor:
    """:func:`finite_rows` of ``updates``; ``ValueError`` when no row is finite."""
    _check_updates(updates, name)
    mask = finite_rows(updates)
    if not bool(mask.any()):
        raise ValueError(f"{name} needs at least 1 finite client, got 0 of {updates.shape[0]}")
    return mask


def _finite_weights(weights: Tensor | None, mask: Tensor, name: str) -> Tensor:
    """Per-client ``weights`` (uniform if None) of the finite rows, float64, scaled to sum 1."""
    k = mask.numel()
    if weights is None:
        w = torch.ones(k, dtype=torch.float64, device=mask.device)
    else:
        w = torch.as_tensor(weights, dtype=torch.float64, device=mask.device)
        if tuple(w.shape) != (k,):
            raise ValueError(f"{name}: weights must have shape ({k},) (one per client), got {tuple(w.shape)}")
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise ValueError(f"{name}: weights must be finite and >= 0, got {w.tolist()}")
    w = w[mask]
    if not w.sum() > 0:
        raise ValueError(f"{name}: the finite clients' weights sum to 0; give at least one a positive weight")
    return w / w.sum()


def _check_int(value: int, name: str, what: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: {what} must be an int >= {minimum}, got {value!r}")


def _check_positive(value: float, name: str, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
            or not math.isfinite(value):
        raise ValueError(f"{name}: {what} must be a finite number > 0, got {value!r}")


# --------------------------------------------------------------------------- baselines of the paper


def fedavg(updates: Tensor, weights: Tensor | None = None) -> Tensor:
    """Weighted mean of the finite rows (McMahan et al. 2017); ``weights`` e.g. sample counts."""
    mask = _finite_mask(updates, "fedavg")
    return _weighted_rows(_finite_weights(weights, mask, "fedavg"), updates, _all_or_mask(mask))


def coordinate_median(updates: Tensor, *, chunk_size: int | None = None) -> Tensor:
    """Coordinate-wise median of the finite rows (Yin et al. 2018); even K: mean of the two middle values."""
    _check_chunk_size(chunk_size, "coordinate_median")
    mask = _finite_mask(updates, "coordinate_median")
    out = torch.empty(updates.shape[1], dtype=updates.dtype, device=updates.device)
    return _map_columns(updates, _all_or_mask(mask), 8 * updates.shape[0], chunk_size, out,
                        lambda chunk: _median0(chunk, scratch=True))


def trimmed_mean(updates: Tensor, beta: float = 0.2, *, chunk_size: int | None = None) -> Tensor:
    """Coordinate-wise trimmed mean (Yin et al. 2018): drop ``floor(beta K)`` values at each end, average.

    When nothing is dropped it is the plain mean (the reference returns NaN there).
    """
    name = "trimmed_mean"
    _check_updates(updates, name)
    _check_chunk_size(chunk_size, name)
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta < 0.5:
        raise ValueError(f"{name}: beta must be in [0, 0.5) (the share trimmed at each end), got {beta!r}")
    mask = _finite_mask(updates, name)
    k = int(mask.sum())
    drop = int(beta * k)
    if drop == 0:
        return fedavg(updates)
    out = torch.empty(updates.shape[1], dtype=updates.dtype, device=updates.device)
    return _map_columns(updates, _all_or_mask(mask), 16 * k, chunk_size, out,
                        lambda chunk: _stable_sort0(chunk)[0][drop:k - drop].mean(dim=0))


def repeated_median(updates: Tensor, *, chunk_size: int | None = None) -> Tensor:
    """Coordinate-wise repeated median (Siegel 1982) as the reference uses it: the line at the middle rank.

    The reference's line has ``intercept = med(y) - slope (K - 1) / 2``, so its value at the middle
    rank ``(K - 1) / 2`` is the coordinate median whatever the slope; it is computed as such, without
    the ``O(K^2)`` slope (see :func:`robust_line` for the line itself).
    """
    return coordinate_median(updates, chunk_size=chunk_size)


def foolsgold_weights(features: Tensor, *, confidence: float = 1.0) -> Tensor:
    """FoolsGold's per-client weights in [0, 1] (Fung et al. 2018, Algorithm 1), one round, ``[K]``.

    Cosine similarity of the clients' feature vectors (their summed updates of the output layer);
    each client's largest similarity, "pardoning" of honest clients similar to a sybil
    (``cs_ij *= max_i / max_j`` where ``max_i < max_j``), ``1 - max``, clipped to [0, 1] and divided by
    the largest; then the logit ``confidence * (ln(w / (1 - w)) + 0.5)`` clipped to [0, 1] (a weight
    of exactly 1 becomes 0.99 first). Non-finite rows get 0 and take no part.
    """
    name = "foolsgold_weights"
    _check_positive(confidence, name, "confidence")
    mask = _finite_mask(features, name)
    k = features.shape[0]
    unit = (features if bool(mask.all()) else features[mask]).to(torch.float64, copy=True)
    unit /= unit.norm(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    sim = (unit @ unit.T).fill_diagonal_(0.0)
    top = sim.max(dim=1).values
    pardon = top.unsqueeze(1) < top.unsqueeze(0)
    sim = torch.where(pardon, sim * top.unsqueeze(1) / top.unsqueeze(0).clamp_min(1e-300), sim)
    wv = (1 - sim.max(dim=1).values).clamp(0, 1)
    out = torch.zeros(k, dtype=torch.float64, device=wv.device)
    if not wv.max() > 0:
        return out.to(features.dtype)
    wv = wv / wv.max()
    wv = torch.where(wv == 1, torch.full_like(wv, 0.99), wv)
    wv = (confidence * (torch.log(wv / (1 - wv)) + 0.5)).clamp(0, 1)
    out[mask] = wv
    return out.to(features.dtype)


# --------------------------------------------------------------------------- beyond the paper


def krum_scores(updates: Tensor, f: int) -> Tensor:
    """Krum scores (Blanchard et al. 2017): sum of squared distances to the ``K - f - 2`` nearest others.

    Non-finite rows score ``+inf``; needs ``K > 2f + 2`` finite clients.
    """
    return krum_ranking(updates, f).scores


class KrumRanking(NamedTuple):
    """Krum scores ``[K]`` (``+inf`` for non-finite rows) and the finite rows' indices, best first."""

    scores: Tensor
    order: Tensor


def krum_ranking(updates: Tensor, f: int) -> KrumRanking:
    """Krum scores and the finite rows ranked by them (ties by the sum of all distances)."""
    name = "krum"
    _check_updates(updates, name)
    _check_int(f, name, "f (the number of Byzantine clients tolerated)", 0)
    k_all = updates.shape[0]
    mask = finite_rows(updates)
    k = int(mask.sum())
    if k <= 2 * f + 2:
        raise ValueError(f"{name} needs K > 2f + 2 finite clients: with f={f} that is at least {2 * f + 3}, "
                         f"got K={k}; lower f or add clients")
    dist = _pairwise_sq_distances(updates, _all_or_mask(mask))
    nearest = torch.sort(dist, dim=1).values[:, 1:k - f - 1]      # column 0 is the row itself
    finite_scores = nearest.sum(dim=1)
    scores = torch.full((k_all,), math.inf, dtype=torch.float64, device=updates.device)
    scores[mask] = finite_scores
    index = torch.nonzero(mask).flatten()
    return KrumRanking(scores, index[_krum_order(finite_scores, dist)])


def krum(updates: Tensor, f: int, m: int = 1) -> Tensor:
    """Krum (m=1) or Multi-Krum (mean of the m best-scored rows), Blanchard et al. 2017 / El Mhamdi et al. 2018.

    Needs ``K > 2f + 2`` finite clients and ``1 <= m <= K - f``.
    """
    return updates[krum_select(updates, f, m)].mean(dim=0)


def krum_select(updates: Tensor, f: int, m: int = 1) -> Tensor:
    """Indices of the ``m`` rows with the lowest Krum scores (ties by the sum of all distances)."""
    _check_int(m, "krum", "m (the number of selected clients)", 1)
    order = krum_ranking(updates, f).order
    if m > order.numel() - f:
        raise ValueError(f"krum needs m <= K - f: m={m}, K={order.numel()} finite clients, f={f}")
    return order[:m]


def bulyan(updates: Tensor, f: int, *, chunk_size: int | None = None, selection: Tensor | None = None) -> Tensor:
    """Bulyan (El Mhamdi et al. 2018): ``K - 2f`` rows picked by repeated Krum, then per coordinate the
    mean of the ``K - 4f`` values closest to their median. Needs ``K >= 4f + 3`` finite clients.

    ``selection`` may pass the result of :func:`bulyan_selection` computed before.
    """
    _check_chunk_size(chunk_size, "bulyan")
    k = _check_bulyan(updates, f)
    selected = bulyan_selection(updates, f) if selection is None else selection
    keep = k - 4 * f
    chosen_rows = torch.zeros(updates.shape[0], dtype=torch.bool, device=updates.device)
    chosen_rows[selected] = True

    def closest_mean(chunk: Tensor) -> Tensor:
        closest = _stable_sort0((chunk - _median0(chunk)).abs())[1][:keep]
        return torch.gather(chunk, 0, closest).mean(dim=0)

    out = torch.empty(updates.shape[1], dtype=updates.dtype, device=updates.device)
    return _map_columns(updates, chosen_rows, 24 * len(selected), chunk_size, out, closest_mean)


def _check_bulyan(updates: Tensor, f: int) -> int:
    name = "bulyan"
    _check_updates(updates, name)
    _check_int(f, name, "f (the number of Byzantine clients tolerated)", 0)
    k = int(finite_rows(updates).sum())
    if k < 4 * f + 3:
        raise ValueError(f"{name} needs K >= 4f + 3 finite clients: with f={f} that is {4 * f + 3}, got K={k}; "
                         f"lower f or add clients")
    return k


def bulyan_selection(updates: Tensor, f: int) -> Tensor:
    """Indices (into all rows) of the ``K - 2f`` finite rows Bulyan keeps, by Krum on the shrinking set.

    Each pick scores the remaining ``r`` rows by their ``r - f - 2`` nearest remaining rows, at least
    one (Krum's count reaches 0 in the last picks, where every score would tie).
    """
    _check_bulyan(updates, f)
    mask = finite_rows(updates)
    index = torch.nonzero(mask).flatten()
    k = index.numel()
    dist = _pairwise_sq_distances(updates, _all_or_mask(mask))
    remaining = torch.ones(k, dtype=torch.bool, device=updates.device)
    for _ in range(k - 2 * f):
        alive = torch.nonzero(remaining).flatten()
        sub = dist[alive][:, alive]
        near = max(alive.numel() - f - 2, 1)
        scores = torch.sort(sub, dim=1).values[:, 1:1 + near].sum(dim=1)
        remaining[alive[_krum_order(scores, sub)[0]]] = False
    return index[~remaining]


class WeiszfeldResult(NamedTuple):
    """The geometric median, the ``[K]`` weights of its last Weiszfeld step (sum 1) and the steps taken."""

    median: Tensor
    client_weights: Tensor
    iterations: int


def geometric_median(updates: Tensor, weights: Tensor | None = None, *, tol: float = 1e-6,
                     max_iter: int = 100, eps: float = 1e-6) -> Tensor:
    """Geometric median by smoothed Weiszfeld iterations (Pillutla et al. 2019, RFA).

    Starts at the coordinate median; each step re-weights clients by ``alpha_k / max(eps, ||x_k - z||)``
    and stops when a step moves less than ``tol`` times the median client distance (RFA stops on the
    objective, which far-away attackers dominate), or after ``max_iter`` steps.
    """
    return weiszfeld(updates, weights, tol=tol, max_iter=max_iter, eps=eps).median


def weiszfeld(updates: Tensor, weights: Tensor | None = None, *, tol: float = 1e-6,
              max_iter: int = 100, eps: float = 1e-6) -> WeiszfeldResult:
    """:func:`geometric_median` with the client weights of its last step and the number of steps."""
    name = "geometric_median"
    _check_positive(tol, name, "tol")
    _check_positive(eps, name, "eps")
    _check_int(max_iter, name, "max_iter", 1)
    mask = _finite_mask(updates, name)
    alpha = _finite_weights(weights, mask, name)
    rows = _all_or_mask(mask)
    z = coordinate_median(updates)
    beta, steps = alpha, 0
    for _ in range(max_iter):
        dist = _row_sq_distances(updates, rows, z).sqrt()
        beta = alpha / dist.clamp_min(eps)
        beta = beta / beta.sum()
        new = _weighted_rows(beta, updates, rows)
        steps += 1
        moved = float((new.double() - z.double()).norm())
        z = new
        if moved <= tol * max(float(dist.median()), eps):
            break
    full = torch.zeros(updates.shape[0], dtype=updates.dtype, device=updates.device)
    full[mask] = beta.to(updates.dtype)
    return WeiszfeldResult(z, full, steps)


def centered_clipping(updates: Tensor, *, tau: float = 1.0, iters: int = 3,
                      center: Tensor | None = None) -> Tensor:
    """Centered clipping (Karimireddy et al. 2021): ``v += mean_k (x_k - v) min(1, tau / ||x_k - v||)``.

    Repeated ``iters`` times from ``center`` (default: the coordinate median).
    """
    name = "centered_clipping"
    _check_positive(tau, name, "tau")
    _check_int(iters, name, "iters", 1)
    mask = _finite_mask(updates, name)
    k = int(mask.sum())
    n = updates.shape[1]
    if center is None:
        v = coordinate_median(updates)
    else:
        if not isinstance(center, Tensor) or tuple(center.shape) != (n,) or not bool(torch.isfinite(center).all()):
            raise ValueError(f"{name}: center must be a finite tensor of shape ({n},)")
        v = center.to(updates.dtype)
    rows = _all_or_mask(mask)
    for _ in range(iters):
        dist = _row_sq_distances(updates, rows, v).sqrt()
        keep = torch.clamp(tau / dist.clamp_min(1e-300), max=1.0)
        # v + sum_k c_k (x_k - v) / K  ==  v (1 - sum c / K) + (c / K) @ x
        v = v * (1 - float(keep.sum()) / k) + _weighted_rows(keep / k, updates, rows)
    return v


def norm_clipping(updates: Tensor, max_norm: float, weights: Tensor | None = None) -> Tensor:
    """Mean of the updates after scaling each to L2 norm at most ``max_norm`` (Sun et al. 2019)."""
    name = "norm_clipping"
    _check_positive(max_norm, name, "max_norm")
    mask = _finite_mask(updates, name)
    weights = _finite_weights(weights, mask, name)
    rows = _all_or_mask(mask)
    norms = _row_sq_distances(updates, rows).sqrt()
    scale = torch.clamp(max_norm / norms.clamp_min(1e-300), max=1.0)
    return _weighted_rows(weights * scale, updates, rows)
