"""Krum's ranking from float32 products, made exact wherever the selection depends on it.

The float64 Gram matrix costs a conversion and a half-speed product. Here the Gram matrix is built from
float32 products over blocks of ``_BLOCK`` columns, summed in float64: the rounding error of one block's
dot product is at most ``gamma_L * sum |x_i x_j|`` whatever the summation order (Higham, *Accuracy and
Stability of Numerical Algorithms*, eq. 3.5), so every squared distance carries a known error bound and
every Krum score an interval. Rows whose intervals overlap near the selection boundary are rescored from
distances summed in float64 over exact squared differences (no cancellation); the selection is then the
one the exact scores give, tie-breaks included, which is the float64 Gram path's wherever that path's own
cancellation error does not exceed the gaps. When too many rows overlap, the caller falls back to float64.

Multi-Krum needs only the selected *set*: a row whose interval lies wholly below the (m+1)-th smallest lower
bound is in, one wholly above the m-th smallest upper bound is out, and only the rows between are rescored,
first from float64 products of those rows alone (an error bound of their own), then, where even those
intervals still overlap (ties, duplicates), from exact squared differences.
"""
from __future__ import annotations

import torch
from torch import Tensor

#: columns of one float32 block product: its error bound grows with the block, while the [B, K, K] block
#: products summed in float64 shrink with it (K / L values per input value: at K = 200 and 128 columns
#: that sum cost more than the products; 256 columns made Krum 1.7-2x faster there, level elsewhere)
_BLOCK = 256
#: the fast path is taken from this many matrix elements on (below it the float64 path costs little)
FAST_MIN_ELEMENTS = 1 << 18
#: rescoring more rows than this share of K costs more than the float64 Gram: fall back to it
_MAX_RESCORED_SHARE = 0.25


def fast_path_allowed(values: Tensor) -> bool:
    """float32 on a device whose float32 products are IEEE (no TF32 / bf16 shortcuts), and large enough."""
    return (values.dtype == torch.float32 and values.numel() >= FAST_MIN_ELEMENTS
            and torch.get_float32_matmul_precision() == "highest"
            and not (values.is_cuda and torch.backends.cuda.matmul.allow_tf32))


def _blocked_gram(values: Tensor) -> Tensor:
    """``[K, K]`` float64 sums of float32 block products of ``_BLOCK`` columns each."""
    k, n = values.shape
    gram = torch.zeros(k, k, dtype=torch.float64, device=values.device)
    group = _BLOCK * max(1, (1 << 22) // (k * _BLOCK))            # about 4M elements per batched product
    for start in range(0, n, group):
        block = values[:, start:start + group]
        width = block.shape[1]
        full = width - width % _BLOCK
        if full:
            batched = block[:, :full].reshape(k, full // _BLOCK, _BLOCK).transpose(0, 1)   # [B, K, L]
            gram += torch.bmm(batched, batched.transpose(1, 2)).sum(dim=0, dtype=torch.float64)
        if width > full:
            rest = block[:, full:]
            gram += (rest @ rest.T).double()
    return gram


def _gamma(length: int) -> float:
    """``gamma_L = L u / (1 - L u)`` for float32 (``u = 2^-24``), doubled as a margin for the float64 sums."""
    lu = min(length, _BLOCK) * 2.0 ** -24
    return 2.0 * lu / (1.0 - lu)


def _true_sq_distances(values: Tensor, rows: Tensor) -> Tensor:
    """``[len(rows), K]`` squared distances of ``rows`` to every row, summed in float64 from exact terms.

    A difference of two float32 values and its square are exact in float64, so only the sum rounds: no
    cancellation, unlike ``|x|^2 + |y|^2 - 2 <x, y>`` (what the float64 Gram path computes).
    """
    k, n = values.shape
    out = torch.zeros(rows.numel(), k, dtype=torch.float64, device=values.device)
    step = max(16, (1 << 16) // max(1, k * rows.numel()))     # the [R, K, step] difference stays in the cache
    for start in range(0, n, step):
        block = values[:, start:start + step].double()
        out += (block[rows].unsqueeze(1) - block.unsqueeze(0)).square_().sum(dim=2)
    return out


def _float64_sq_distances(values: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    """``([len(rows), K] squared distances, their error bounds)`` from float64 products of ``rows`` alone.

    The rows' products with every row cost ``len(rows) / K`` of a float64 Gram matrix; the bound is
    Higham's ``gamma_N (|x| + |y|)^2`` in float64, as :func:`_gamma` is in float32.
    """
    k, n = values.shape
    product = torch.zeros(rows.numel(), k, dtype=torch.float64, device=values.device)
    sq = torch.zeros(k, dtype=torch.float64, device=values.device)
    width = max(1, (1 << 18) // k)                        # about 2 MB of float64 per block: it stays in the cache
    buffer = torch.empty(k, min(width, n), dtype=torch.float64, device=values.device)
    for start in range(0, n, width):
        source = values[:, start:start + width]
        block = buffer[:, :source.shape[1]]
        block.copy_(source)                               # one buffer: no fresh pages per block
        product.addmm_(block[rows], block.T)
        sq += block.square().sum(dim=1)                   # 1.3-1.7x faster than einsum("ij,ij->i")
    dist = (sq[rows].unsqueeze(1) + sq.unsqueeze(0) - 2 * product).clamp_min_(0)
    dist[torch.arange(rows.numel(), device=values.device), rows] = 0.0
    lu = n * 2.0 ** -53
    norms = sq.sqrt()
    error = 2.0 * lu / (1.0 - lu) * (norms[rows].unsqueeze(1) + norms.unsqueeze(0)).square()
    return dist, error


def _certain(low: Tensor, high: Tensor, m: int) -> tuple[Tensor, Tensor]:
    """``(surely in, undecided)`` masks of the ``m`` smallest values, each known only within ``[low, high]``.

    A value below the (m+1)-th smallest lower bound is below the (m+1)-th smallest value, hence among the
    ``m`` smallest whatever the tie-break; one above the m-th smallest upper bound is not.
    """
    surely_in = high < torch.kthvalue(low, m + 1).values
    surely_out = low > torch.kthvalue(high, m).values
    return surely_in, ~(surely_in | surely_out)


def _best_set(values: Tensor, scores: Tensor, slack: Tensor, near: int, m: int) -> tuple[Tensor, Tensor] | None:
    """``(scores, order)`` whose first ``m`` positions hold, as a set, the rows the exact scores select."""
    k = scores.numel()
    if m >= k:
        return scores, torch.argsort(scores, stable=True)
    low, high = scores - slack, scores + slack
    surely_in, undecided = _certain(low, high, m)
    scores = scores.clone()
    if bool(undecided.any()):                             # float64 products of these rows: R / K of a Gram matrix
        rows = torch.nonzero(undecided).flatten()
        dist, error = _float64_sq_distances(values, rows)
        scores[rows] = torch.sort(dist, dim=1).values[:, 1:near + 1].sum(dim=1)
        tight = near * error.max(dim=1).values
        low[rows], high[rows] = scores[rows] - tight, scores[rows] + tight
        surely_in, undecided = _certain(low, high, m)
    chosen = surely_in
    if bool(undecided.any()):                             # ties or near-ties: exact squared differences decide
        rows = torch.nonzero(undecided).flatten()
        if rows.numel() > max(2, _MAX_RESCORED_SHARE * k):
            return None
        exact = _true_sq_distances(values, rows)
        scores[rows] = torch.sort(exact, dim=1).values[:, 1:near + 1].sum(dim=1)
        by_total = torch.sort(exact.sum(dim=1), stable=True).indices
        ranked = by_total[torch.sort(scores[rows][by_total], stable=True).indices]
        chosen = surely_in.clone()
        chosen[rows[ranked[:m - int(surely_in.sum())]]] = True
    order = torch.cat([torch.nonzero(chosen).flatten(), torch.nonzero(~chosen).flatten()])
    return scores, order


def krum_scores_fast(values: Tensor, f: int, exact_prefix: int,
                     ordered: bool = True) -> tuple[Tensor, Tensor] | None:
    """``(scores [K] float64, order [K])`` of the finite rows ``values``, or None to fall back to float64.

    The first ``exact_prefix`` positions of ``order`` and the boundary after them are the float64
    path's exactly (ties by the sum of all distances); scores of rows never rescored carry float32
    rounding (relative error about ``1e-4`` at most). With ``ordered=False`` only the boundary is exact:
    the first ``exact_prefix`` positions hold the right rows as a set, perhaps in another order
    (Multi-Krum averages them, so only the set matters, and far fewer rows need rescoring: :func:`_best_set`).
    """
    k, n = values.shape
    near = k - f - 2
    gram = _blocked_gram(values)
    sq = gram.diagonal().clone()
    if not bool(torch.isfinite(sq).all()):
        return None                                     # overflow of a float32 product: float64 decides
    dist = (sq.unsqueeze(0) + sq.unsqueeze(1) - 2 * gram).clamp_min_(0).fill_diagonal_(0)
    dist = (dist + dist.T) / 2
    norms = sq.clamp_min(0).sqrt() * (1 + _gamma(n))
    error = _gamma(n) * (norms.unsqueeze(0) + norms.unsqueeze(1)).square()
    scores = torch.sort(dist, dim=1).values[:, 1:near + 1].sum(dim=1)
    slack = near * error.max(dim=1).values
    if not ordered:
        return _best_set(values, scores, slack, near, min(max(exact_prefix, 1), k))
    order = torch.argsort(scores, stable=True)
    low, high = (scores - slack)[order], (scores + slack)[order]
    # clusters of positions whose intervals chain together; only they can swap once scored exactly
    starts = torch.ones(k, dtype=torch.bool, device=values.device)
    starts[1:] = low[1:] > torch.cummax(high, dim=0).values[:-1]
    cluster = torch.cumsum(starts.long(), dim=0)
    boundary = min(max(exact_prefix, 1), k) - 1          # positions 0..boundary are the selection
    sizes = torch.bincount(cluster)
    # every cluster up to the last selected position's; if that one also holds position `boundary + 1`,
    # the boundary itself is decided by the exact scores
    moved = (cluster <= cluster[boundary]) & (sizes[cluster] > 1)
    rescore = order[moved].sort().values                  # ascending: equal keys keep the row order
    if rescore.numel() > max(2, _MAX_RESCORED_SHARE * k):
        return None
    if rescore.numel():
        rows = _true_sq_distances(values, rescore)          # exactly symmetric among the rescored rows
        exact_scores = torch.sort(rows, dim=1).values[:, 1:near + 1].sum(dim=1)
        totals = rows.sum(dim=1)
        # order inside the rescored positions: by exact score, ties by the sum of all distances
        by_total = torch.sort(totals, stable=True).indices
        local = by_total[torch.sort(exact_scores[by_total], stable=True).indices]
        positions = torch.nonzero(moved).flatten()
        scores = scores.clone()
        scores[rescore] = exact_scores
        order = order.clone()
        order[positions] = rescore[local]
    return scores, order
