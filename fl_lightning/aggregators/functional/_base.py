"""Input checks and the chunked helpers every rule shares: finite rows, column chunks, row distances."""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

import torch
from torch import Tensor


_MIB = 1 << 20


#: elements of one ``[K, chunk]`` op: large enough to hide per-op overhead, small enough for the caches
_TARGET_ROW_ELEMENTS = 65536


def _check_updates(updates: Tensor, name: str) -> Tensor:
    if not isinstance(updates, Tensor):
        raise TypeError(f"{name}: updates must be a torch.Tensor of shape [K, N], got {type(updates).__name__}")
    if updates.dim() != 2:
        raise ValueError(f"{name}: updates must have shape [K, N] (one row per client), "
                         f"got shape {tuple(updates.shape)}")
    if not updates.is_floating_point():
        raise ValueError(f"{name}: updates must be floating point, got {updates.dtype}; call .float() first")
    return updates


def _given_or_scanned(updates: Tensor, finite: Tensor | None, name: str) -> Tensor:
    """``finite`` (the caller's ``[K]`` mask of finite rows, e.g. the round loop's ``ctx.finite``) after
    a shape check, or :func:`finite_rows` when it is None: the rows are scanned at most once a round."""
    if finite is None:
        return finite_rows(updates)
    if not isinstance(finite, Tensor) or finite.dtype != torch.bool or tuple(finite.shape) != (updates.shape[0],):
        shape = tuple(finite.shape) if isinstance(finite, Tensor) else type(finite).__name__
        raise ValueError(f"{name}: finite must be a bool tensor of shape ({updates.shape[0]},) marking the finite "
                         f"rows, got {shape}")
    return finite.to(updates.device)


def _require_finite(updates: Tensor, needed: int, name: str,
                    finite: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The finite rows of ``updates`` and their mask; ``ValueError`` if fewer than ``needed``."""
    _check_updates(updates, name)
    mask = _given_or_scanned(updates, finite, name)
    count = _count_finite(mask, needed, name)
    return (updates if count == updates.shape[0] else updates[mask]), mask


def _count_finite(mask: Tensor, needed: int, name: str) -> int:
    """How many rows ``mask`` marks finite; ``ValueError`` naming the NaN/Inf rows if fewer than ``needed``."""
    count = int(mask.sum())
    if count < needed:
        raise ValueError(f"{name} needs K >= {needed} finite clients, got {count}"
                         + (f" ({mask.numel() - count} of {mask.numel()} rows hold NaN/Inf)"
                            if count < mask.numel() else ""))
    return count


def finite_rows(updates: Tensor) -> Tensor:
    """``[K]`` bool: the clients whose whole update is finite (checked chunk by chunk)."""
    _check_updates(updates, "finite_rows")
    k, n = updates.shape
    mask = torch.ones(k, dtype=torch.bool, device=updates.device)
    step = max(1, (64 * _MIB) // max(1, k))
    for start in range(0, n, step):
        block = updates[:, start:start + step]
        # a NaN or Inf makes its row's sum non-finite, so finite sums clear their rows at the cost of one
        # reduction (25x cheaper than isfinite + all); rows whose sum is not finite are checked exactly
        # (a finite row may overflow its sum)
        suspect = ~(block.sum(dim=1).abs() < math.inf)
        if bool(suspect.any()):
            mask[suspect] &= torch.isfinite(block[suspect]).all(dim=1)
    return mask


#: elements of one chunk for the coordinate-wise order statistics: each op of their comparator networks
#: runs on a whole row of the chunk, so wide rows amortise the per-op cost, while the chunk (8 MiB of
#: float32) still fits the last-level cache (measured in BENCHMARKS.md)
_WIDE_CHUNK_ELEMENTS = 1 << 21


def _chunk_columns(k: int, n: int, bytes_per_column: int, chunk_size: int | None,
                   target_elements: int = _TARGET_ROW_ELEMENTS) -> int:
    """Columns per chunk: ``chunk_size`` if given, else ``[K, chunk]`` ops of about
    ``target_elements`` values, capped so one chunk's scratch stays within half the input's
    size (at least 16 MiB, at most 64 MiB): two workers' chunks then fit in one more input's worth.
    """
    if chunk_size is not None:
        return max(1, min(chunk_size, n))
    budget = min(max(2 * k * n, 16 * _MIB), 64 * _MIB)
    by_budget = max(1, budget // max(1, bytes_per_column))
    by_cache = max(64, target_elements // max(1, k))
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


#: inputs smaller than this run on one worker: starting threads would cost more than they save
_PARALLEL_MIN_BYTES = _MIB // 2


def _parallel_workers(threads: int, input_bytes: int) -> int:
    """Workers a chunked rule uses for an input of ``input_bytes`` when torch has ``threads`` threads."""
    return max(1, threads) if input_bytes >= _PARALLEL_MIN_BYTES else 1


def _split_for_workers(step: int, n: int, workers: int) -> int:
    """``step`` columns per chunk, lowered so that ``n`` columns give every worker a chunk."""
    return step if workers == 1 else max(1, min(step, -(-n // workers)))


def _map_chunks(work: Callable[[list[int]], _T], starts: list[int], workers: int, input_bytes: int) -> list[_T]:
    """``work`` over contiguous runs of chunk ``starts``, on up to ``workers`` threads (ops release the GIL)."""
    workers = max(1, min(_parallel_workers(workers, input_bytes), len(starts)))
    if workers == 1:
        return [work(starts)]
    size = -(-len(starts) // workers)
    runs = [starts[i:i + size] for i in range(0, len(starts), size)]
    with ThreadPoolExecutor(len(runs)) as pool:
        return list(pool.map(work, runs))


def _column_chunks(values: Tensor, mask: Tensor | None, bytes_per_column: int,
                   scratch_bytes: int = 32 * _MIB) -> Iterator[tuple[int, int, Tensor]]:
    """Yield ``(start, stop, chunk)``: the rows ``mask`` selects (all if None) of a block of columns.

    For a few large ops (matrix products, reductions): chunks of at most ``scratch_bytes`` of scratch.
    """
    n = values.shape[1]
    step = max(1, min(n, scratch_bytes // max(1, bytes_per_column)))
    for start in range(0, n, step):
        block = values[:, start:start + step]
        yield start, min(n, start + step), (block if mask is None else block[mask])


#: how :func:`_map_columns` uses torch's threads: ``"chunks"`` runs single-threaded ops with whole chunks
#: on worker threads; ``"serial"`` runs single-threaded ops on one worker (many small ops, such as a
#: comparator network's: two Python threads contending for the GIL between ops of under ~250k values
#: run slower than one, measured in BENCHMARKS.md); ``"torch"`` runs one worker whose few large ops
#: (a sort, a top-k) use torch's own intra-op threads
THREADING = ("chunks", "serial", "torch")


def _map_columns(updates: Tensor, mask: Tensor | None, bytes_per_column: int, chunk_size: int | None,
                 out: Tensor, fn: Callable[[Tensor], Tensor], target_elements: int = _TARGET_ROW_ELEMENTS,
                 threading: str = "chunks") -> Tensor:
    """``out[..., start:stop] = fn(chunk)`` for every chunk of columns of the rows ``mask`` selects.

    Each ``chunk`` is a fresh contiguous copy ``fn`` may overwrite; ``threading`` (see
    :data:`THREADING`) says where the threads go.
    """
    k, n = updates.shape
    rows = k if mask is None else int(mask.sum())
    input_bytes = rows * n * updates.element_size()
    step = _chunk_columns(rows, n, bytes_per_column, chunk_size, target_elements)
    if chunk_size is None and threading == "chunks":
        step = _split_for_workers(step, n, _parallel_workers(torch.get_num_threads(), input_bytes))

    def work(starts: list[int]) -> None:
        for start in starts:
            block = updates[:, start:start + step]
            block = block[mask] if mask is not None else block.clone(memory_format=torch.contiguous_format)
            out[..., start:start + step] = fn(block)

    starts = list(range(0, n, step))
    if threading == "torch":
        work(starts)
        return out
    with _single_threaded_ops() as threads:
        _map_chunks(work, starts, threads if threading == "chunks" else 1, input_bytes)
    return out


def _draw_device(generator: torch.Generator | None) -> torch.device:
    """Where a draw from ``generator`` happens: its own device (the default generator's is the CPU).

    Rules draw there and move the result to the updates' device, so a CPU generator drives rules on
    any device and one seed gives the same draws whatever device the updates live on.
    """
    return torch.device("cpu") if generator is None else generator.device


def _all_or_mask(mask: Tensor) -> Tensor | None:
    return None if bool(mask.all()) else mask


def _finite_values(updates: Tensor, mask: Tensor) -> Tensor:
    """The rows ``mask`` marks finite: ``updates`` itself (no copy) when that is every row."""
    return updates if bool(mask.all()) else updates[mask]


def _weighted_rows(weights: Tensor, updates: Tensor, mask: Tensor | None) -> Tensor:
    """``weights @ updates[mask]`` without copying the selected rows all at once."""
    if mask is None:
        return weights.to(updates.dtype) @ updates
    out = torch.empty(updates.shape[1], dtype=updates.dtype, device=updates.device)
    for start, stop, chunk in _column_chunks(updates, mask, 4 * int(mask.sum())):
        out[start:stop] = weights.to(updates.dtype) @ chunk
    return out


def _mean_of_rows(updates: Tensor, rows: Tensor, mask: Tensor | None = None) -> Tensor:
    """``updates[rows].mean(dim=0)`` without copying the selected rows all at once (a [K, N] copy of a
    large model's updates costs as much memory as the input). ``rows`` index the finite rows ``mask``
    selects when it is given, the rows of ``updates`` otherwise."""
    if mask is not None and not bool(mask.all()):
        rows = torch.nonzero(mask).flatten()[rows]
    out = torch.empty(updates.shape[1], dtype=updates.dtype, device=updates.device)
    for start, stop, block in _column_chunks(updates, None, updates.element_size() * rows.numel()):
        out[start:stop] = block[rows].mean(dim=0)
    return out


#: columns per row of one partial norm in :func:`_row_sq_distances`: its float32 reduction then carries a
#: relative error of 1e-8 to 3e-7 (measured against float64; 1e-7 to 6e-7 at 16k columns)
_NORM_COLUMNS = 1 << 12


def _row_sq_distances(updates: Tensor, mask: Tensor | None, center: Tensor | None = None) -> Tensor:
    """``[K_finite]`` float64 squared distances of the finite rows to ``center`` (to 0 if None).

    Norms (no center): each row's norm over blocks of ``_NORM_COLUMNS`` columns in the updates'
    precision, every block of a 32 MiB chunk in one fused op (no squared copy: 1.5-2x faster than
    squaring then summing at N = 1e6). Distances: the difference of 4 MiB chunks, squared and summed in the
    updates' precision (torch's cascaded sums). Either way the partial sums are added in float64:
    relative error about 1e-7, the rounding the float32 values carry anyway.
    """
    k = updates.shape[0]
    total = torch.zeros(k if mask is None else int(mask.sum()), dtype=torch.float64, device=updates.device)
    if center is not None:
        for start, stop, chunk in _column_chunks(updates, mask, 8 * k, 4 * _MIB):
            total += (chunk - center[start:stop]).square_().sum(dim=1).double()
        return total
    width = _NORM_COLUMNS * max(1, (32 * _MIB) // (_NORM_COLUMNS * updates.element_size() * max(1, k)))
    for _, _, chunk in _column_chunks(updates, mask, 1, width):     # `width` columns at a time
        columns = chunk.shape[1]
        whole = columns - columns % _NORM_COLUMNS
        if whole:
            blocks = chunk[:, :whole].unflatten(1, (whole // _NORM_COLUMNS, _NORM_COLUMNS))
            total += torch.linalg.vector_norm(blocks, dim=2).double().square_().sum(dim=1)
        if whole < columns:
            total += torch.linalg.vector_norm(chunk[:, whole:], dim=1).double().square_()
    return total


def _finite_sq_distances(updates: Tensor, finite: Tensor | None, name: str,
                         center: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(mask [K], squared distances [K_finite])``: the finite rows and their :func:`_row_sq_distances`.

    Without a ``finite`` mask the distances of every row come first and stand in for the scan: a NaN or
    Inf makes its row's distance non-finite, so only rows whose distance is not finite are scanned (a
    finite row may overflow it). One pass over the input instead of two; each row's distance is the
    one the masked computation gives.
    """
    if finite is not None:
        mask = _given_or_scanned(updates, finite, name)
        return mask, _row_sq_distances(updates, _all_or_mask(mask), center)
    dist = _row_sq_distances(updates, None, center)
    suspect = ~(dist < math.inf)
    if not bool(suspect.any()):
        return torch.ones(updates.shape[0], dtype=torch.bool, device=updates.device), dist
    mask = ~suspect
    mask[suspect] = finite_rows(updates[suspect])
    return mask, dist[mask]


def _gram(updates: Tensor, mask: Tensor | None, float64: bool = True) -> Tensor:
    """``[K_f, K_f]`` float64 inner products of the finite rows, accumulated over column chunks; with
    ``float64=False`` each chunk's product is taken in the updates' precision (one BLAS product)."""
    gram = None
    for _, _, chunk in _column_chunks(updates, mask, 16 * updates.shape[0]):
        block = chunk.double() if float64 else chunk
        part = (block @ block.T).double()
        gram = part if gram is None else gram + part
    if gram is None:                     # no columns: every inner product is 0
        k = updates.shape[0] if mask is None else int(mask.sum())
        return torch.zeros(k, k, dtype=torch.float64, device=updates.device)
    return gram


def _pairwise_sq_distances(updates: Tensor, mask: Tensor | None, float64: bool = True) -> Tensor:
    """``[K_f, K_f]`` float64 squared distances of the finite rows from one Gram matrix (see :func:`_gram`)."""
    return _gram_to_sq_distances(_gram(updates, mask, float64))


def _gram_to_sq_distances(gram: Tensor) -> Tensor:
    sq = gram.diagonal()
    dist = (sq.unsqueeze(0) + sq.unsqueeze(1) - 2 * gram).clamp_min_(0).fill_diagonal_(0)
    return (dist + dist.T) / 2          # exactly symmetric: mutual nearest neighbours tie exactly


def _finite_pairwise_sq_distances(updates: Tensor, finite: Tensor | None, name: str,
                                  float64: bool = True) -> tuple[Tensor, Tensor]:
    """``(mask [K], squared distances [K_f, K_f])``: the finite rows and :func:`_pairwise_sq_distances`.

    Without a ``finite`` mask the Gram matrix of every row comes first and stands in for the scan, as
    in :func:`_finite_sq_distances`: its diagonal holds each row's squared norm, not finite for a row
    with a NaN or Inf (or one whose norm overflows). Only then are the rows scanned and the matrix
    taken again over the finite ones.
    """
    if finite is None:
        gram = _gram(updates, None, float64)
        if bool(torch.isfinite(gram.diagonal()).all()):
            return torch.ones(updates.shape[0], dtype=torch.bool, device=updates.device), _gram_to_sq_distances(gram)
        finite = finite_rows(updates)
    mask = _given_or_scanned(updates, finite, name)
    return mask, _pairwise_sq_distances(updates, _all_or_mask(mask), float64)


def row_distances(updates: Tensor, center: Tensor | None = None, *, finite: Tensor | None = None) -> Tensor:
    """``[K]`` L2 distance of each row to ``center`` (its norm if None); ``+inf`` for non-finite rows."""
    _check_updates(updates, "row_distances")
    mask, dist = _finite_sq_distances(updates, finite, "row_distances", center)
    out = torch.full((updates.shape[0],), math.inf, dtype=torch.float64, device=updates.device)
    out[mask] = dist.sqrt()
    return out


def _finite_mask(updates: Tensor, name: str, finite: Tensor | None = None) -> Tensor:
    """The finite rows' mask (``finite`` if given, else scanned); ``ValueError`` when no row is finite."""
    _check_updates(updates, name)
    return _require_some(_given_or_scanned(updates, finite, name), name)


def _require_some(mask: Tensor, name: str) -> Tensor:
    """``mask`` of the finite rows; ``ValueError`` when it marks none."""
    if not bool(mask.any()):
        raise ValueError(f"{name} needs at least 1 finite client, got 0 of {mask.numel()}")
    return mask


def _finite_weights(weights: Tensor | None, mask: Tensor, name: str) -> Tensor:
    """Per-client ``weights`` (uniform if None) of the finite rows, float64, scaled to sum 1, on ``mask``'s device."""
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



