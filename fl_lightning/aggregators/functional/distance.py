"""Rules that pick clients by their pairwise distances: Krum, Multi-Krum, Bulyan."""
from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import torch
from torch import Tensor

from fl_lightning.aggregators.functional._fast_distances import fast_path_allowed, krum_scores_fast
from fl_lightning.aggregators.functional._base import (
    _all_or_mask, _check_updates, _finite_pairwise_sq_distances, _finite_sq_distances, _finite_values,
    _given_or_scanned, _map_columns, _mean_of_rows, _pairwise_sq_distances, _require_finite,
)
from fl_lightning.aggregators.functional._order import _median0, _stable_sort0
from fl_lightning.aggregators.functional._rules import BULYAN, KRUM, MAJORITY
from fl_lightning.checks import check_bool, check_int, check_optional_int


def _krum_order(scores: Tensor, dist: Tensor) -> Tensor:
    """Indices by increasing Krum score; ties (mutual nearest neighbours) by the sum of all distances.

    The second key keeps the choice independent of the clients' order.
    """
    by_total = torch.sort(dist.sum(dim=1), stable=True).indices
    return by_total[torch.sort(scores[by_total], stable=True).indices]


def krum_scores(updates: Tensor, f: int, *, finite: Tensor | None = None) -> Tensor:
    """Krum scores (Blanchard et al. 2017): sum of squared distances to the ``K - f - 2`` nearest others.

    Non-finite rows score ``+inf``; needs ``K > 2f + 2`` finite clients.
    """
    return krum_ranking(updates, f, finite=finite).scores


class KrumRanking(NamedTuple):
    """Krum scores ``[K]`` (``+inf`` for non-finite rows) and the finite rows' indices, best first."""

    scores: Tensor
    order: Tensor


def krum_ranking(updates: Tensor, f: int, *, finite: Tensor | None = None,
                 exact_prefix: int | None = None, prefix_as_set: bool = False, exact: bool = True) -> KrumRanking:
    """Krum scores and the finite rows ranked by them (ties by the sum of all distances).

    ``exact_prefix=None`` computes every distance from a float64 Gram matrix. ``exact_prefix=m`` allows
    the float32 fast path (:mod:`._fast_distances`): the first ``m`` positions of ``order`` (what Krum
    and Multi-Krum select) are then exactly the float64 path's, and the other scores carry float32
    rounding (relative error below ``1e-4``). ``prefix_as_set=True`` asks only for the right rows in
    those positions, in any order (what an average of them needs).

    ``exact=False`` trades that guarantee for speed: one Gram matrix in the updates' precision, nothing
    rescored (what ByzPy does). Rows whose scores differ by less than its rounding (about ``1e-4``
    relative at N = 1e6 for float32) may then rank in another order than exact scores give.
    """
    name = "krum"
    _check_updates(updates, name)
    check_int(f, "f (the number of Byzantine clients tolerated)", name, minimum=0)
    k_all = updates.shape[0]
    check_bool(exact, "exact", name)
    if exact_prefix is not None:
        check_int(exact_prefix, "exact_prefix", name, minimum=1)
    if exact_prefix is not None and exact:
        fast = _krum_ranking_fast(updates, f, finite, exact_prefix, not prefix_as_set)
        if fast is not None:
            return fast
    mask, dist = _finite_pairwise_sq_distances(updates, finite, name, float64=exact)
    k = int(mask.sum())
    KRUM.check(k, f, name)
    nearest = torch.sort(dist, dim=1).values[:, 1:k - f - 1]      # column 0 is the row itself
    finite_scores = nearest.sum(dim=1)
    scores = torch.full((k_all,), math.inf, dtype=torch.float64, device=updates.device)
    scores[mask] = finite_scores
    index = torch.nonzero(mask).flatten()
    return KrumRanking(scores, index[_krum_order(finite_scores, dist)])


def _krum_ranking_fast(updates: Tensor, f: int, finite: Tensor | None, exact_prefix: int,
                       ordered: bool) -> KrumRanking | None:
    """:func:`krum_ranking` by the float32 fast path, or None where it does not apply (then float64 decides).

    Without a ``finite`` mask the rows are not scanned first: a NaN or Inf row makes its squared norm
    non-finite, which sends the call back to the scanning float64 path.
    """
    if not fast_path_allowed(updates):
        return None
    k_all = updates.shape[0]
    if finite is not None:
        mask = _given_or_scanned(updates, finite, "krum")
        values = _finite_values(updates, mask)
    else:
        mask, values = None, updates
    k = values.shape[0]
    if k < KRUM.minimum(f):
        return None                                        # the float64 path raises the precise error
    fast = krum_scores_fast(values, f, exact_prefix, ordered)
    if fast is None:
        return None
    scores, order = fast
    if mask is None:
        return KrumRanking(scores, order)
    full = torch.full((k_all,), math.inf, dtype=torch.float64, device=updates.device)
    full[mask] = scores
    return KrumRanking(full, torch.nonzero(mask).flatten()[order])


def krum(updates: Tensor, f: int, m: int = 1, *, finite: Tensor | None = None, exact: bool = True) -> Tensor:
    """Krum (m=1) or Multi-Krum (mean of the m best-scored rows), Blanchard et al. 2017 / El Mhamdi et al. 2018.

    Needs ``K > 2f + 2`` finite clients and ``1 <= m <= K - f``. The selected rows are averaged in row
    order, so the result depends on which rows are selected, not on how their scores rank among them.
    The selection is the one exact scores give; ``exact=False`` takes one float32 Gram matrix instead
    (faster, mostly for Multi-Krum; see :func:`krum_ranking`).
    """
    check_int(m, "m (the number of selected clients)", "krum", minimum=1)
    order = krum_ranking(updates, f, finite=finite, exact_prefix=m, prefix_as_set=True, exact=exact).order
    if m > order.numel() - f:
        raise ValueError(f"krum needs m <= K - f: m={m}, K={order.numel()} finite clients, f={f}")
    return _mean_of_rows(updates, order[:m].sort().values)


def krum_select(updates: Tensor, f: int, m: int = 1, *, finite: Tensor | None = None) -> Tensor:
    """Indices of the ``m`` rows with the lowest Krum scores (ties by the sum of all distances)."""
    check_int(m, "m (the number of selected clients)", "krum", minimum=1)
    order = krum_ranking(updates, f, finite=finite, exact_prefix=m).order
    if m > order.numel() - f:
        raise ValueError(f"krum needs m <= K - f: m={m}, K={order.numel()} finite clients, f={f}")
    return order[:m]


def bulyan(updates: Tensor, f: int, *, chunk_size: int | None = None, selection: Tensor | None = None,
           finite: Tensor | None = None) -> Tensor:
    """Bulyan (El Mhamdi et al. 2018): ``K - 2f`` rows picked by repeated Krum, then per coordinate the
    mean of the ``K - 4f`` values closest to their median. Needs ``K >= 4f + 3`` finite clients.

    ``selection`` may pass the result of :func:`bulyan_selection` computed before.
    """
    check_optional_int(chunk_size, "chunk_size", "bulyan", minimum=1)
    k = _check_bulyan(updates, f, finite=finite)
    selected = bulyan_selection(updates, f, finite=finite) if selection is None else selection
    keep = k - 4 * f
    chosen_rows = torch.zeros(updates.shape[0], dtype=torch.bool, device=updates.device)
    chosen_rows[selected] = True

    def closest_mean(chunk: Tensor) -> Tensor:
        closest = _stable_sort0((chunk - _median0(chunk)).abs())[1][:keep]
        return torch.gather(chunk, 0, closest).mean(dim=0)

    out = torch.empty(updates.shape[1], dtype=updates.dtype, device=updates.device)
    return _map_columns(updates, chosen_rows, 24 * len(selected), chunk_size, out, closest_mean)


def _check_bulyan(updates: Tensor, f: int, *, finite: Tensor | None = None) -> int:
    name = "bulyan"
    _check_updates(updates, name)
    check_int(f, "f (the number of Byzantine clients tolerated)", name, minimum=0)
    k = int(_given_or_scanned(updates, finite, name).sum())
    BULYAN.check(k, f, name)
    return k


def bulyan_selection(updates: Tensor, f: int, *, finite: Tensor | None = None) -> Tensor:
    """Indices (into all rows) of the ``K - 2f`` finite rows Bulyan keeps, by Krum on the shrinking set.

    Each pick scores the remaining ``r`` rows by their ``r - f - 2`` nearest remaining rows, at least
    one (Krum's count reaches 0 in the last picks, where every score would tie).
    """
    _check_bulyan(updates, f, finite=finite)
    mask = _given_or_scanned(updates, finite, "bulyan")
    index = torch.nonzero(mask).flatten()
    k = index.numel()
    dist = _pairwise_sq_distances(updates, _all_or_mask(mask))
    remaining = torch.ones(k, dtype=torch.bool, device=dist.device)
    for _ in range(k - 2 * f):
        alive = torch.nonzero(remaining).flatten()
        sub = dist[alive][:, alive]
        near = max(alive.numel() - f - 2, 1)
        scores = torch.sort(sub, dim=1).values[:, 1:1 + near].sum(dim=1)
        remaining[alive[_krum_order(scores, sub)[0]]] = False
    return index[~remaining]



class SubsetResult(NamedTuple):
    """The aggregate ``[N]`` and the ``[K]`` bool mask of the rows it averages (False for non-finite rows)."""

    aggregate: Tensor
    selected: Tensor


def check_byzantine_count(f: int, owner: str) -> int:
    """``f`` if it is an int >= 0 (the number of Byzantine clients a rule tolerates)."""
    return check_int(f, "f (the number of Byzantine clients tolerated)", owner, minimum=0)


#: subsets MDA and SMEA examine at most (each is a batched small matrix op)
MAX_SUBSETS = 2_000_000


def _subsets(k: int, size: int, owner: str, device: torch.device | None = None, batch: int = 4096):
    """Batches ``[B, size]`` of the ``size``-subsets of ``range(k)`` in lexicographic order, on ``device``."""
    total = math.comb(k, size)
    if total > MAX_SUBSETS:
        raise ValueError(f"{owner} examines every subset of K - f clients: C({k}, {size}) = {total} is more than "
                         f"{MAX_SUBSETS}; use fewer clients per round or another rule")
    combos = itertools.combinations(range(k), size)
    while True:
        chunk = list(itertools.islice(combos, batch))
        if not chunk:
            return
        yield torch.tensor(chunk, dtype=torch.long, device=device).reshape(len(chunk), size)


def _full_mask(mask: Tensor, chosen: Tensor) -> Tensor:
    """``[K]`` bool over all rows from ``chosen`` indices into the finite rows ``mask`` selects."""
    full = torch.zeros(mask.numel(), dtype=torch.bool, device=mask.device)
    full[torch.nonzero(mask).flatten()[chosen]] = True
    return full


def mda_selection(updates: Tensor, f: int, *, finite: Tensor | None = None) -> SubsetResult:
    """Minimum-diameter averaging (El Mhamdi et al. 2018, "The hidden vulnerability", eq. MDA):
    the mean of the ``K - f`` rows whose largest pairwise distance (diameter) is smallest.

    Every subset is examined (``C(K, f)`` of them). Equal diameters are common (when the two farthest
    points are apart from the next farthest pair, dropping either leaves the same diameter): they are
    broken by the smaller sum of squared pairwise distances, so the choice does not depend on the
    clients' order, then by the first subset in lexicographic order of row indices (ByzFL's only
    rule). Needs ``K > 2f`` finite clients.
    """
    name = "mda"
    values, mask = _majority_input(updates, f, name, finite)
    k = values.shape[0]
    dist = _pairwise_sq_distances(updates, _all_or_mask(mask))
    best, best_subset = (math.inf, math.inf), None
    for subsets in _subsets(k, k - f, name, dist.device):
        inner = dist[subsets.unsqueeze(2), subsets.unsqueeze(1)].flatten(1)   # [B, m * m]
        diameters = inner.max(dim=1).values if inner.shape[1] \
            else torch.zeros(len(subsets), dtype=dist.dtype, device=dist.device)
        spread = inner.sum(dim=1)
        for index in torch.nonzero(diameters == diameters.min()).flatten().tolist():
            key = (float(diameters[index]), float(spread[index]))
            if key < best:
                best, best_subset = key, subsets[index]
    return SubsetResult(_mean_of_rows(updates, best_subset, mask), _full_mask(mask, best_subset))


def _majority_input(updates: Tensor, f: int, name: str, finite: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """The finite rows (and their mask) of a rule that needs an honest majority, ``K > 2f``, checked."""
    check_byzantine_count(f, name)
    values, mask = _require_finite(updates, 1, name, finite)
    MAJORITY.check(values.shape[0], f, name)
    return values, mask


def mda(updates: Tensor, f: int, *, finite: Tensor | None = None) -> Tensor:
    """Minimum-diameter averaging: see :func:`mda_selection`."""
    return mda_selection(updates, f, finite=finite).aggregate


def monna_selection(updates: Tensor, f: int, trusted: int = 0,
                    *, finite: Tensor | None = None) -> SubsetResult:
    """MoNNA (Farhadkhani et al. 2023, "Robust collaborative learning with linear gradient overhead",
    Algorithm 1): the mean of the ``K - f`` rows nearest to the trusted row ``trusted`` (itself included).

    Equal distances are broken by row index. Needs ``K > 2f`` finite clients and a finite trusted row.
    """
    name = "monna"
    check_byzantine_count(f, name)
    _check_updates(updates, name)
    if updates.shape[0] == 0:
        raise ValueError(f"{name} needs K >= 1 clients (one of them the trusted row), got 0 rows")
    check_int(trusted, "trusted (the trusted client's row)", name, minimum=0, maximum=updates.shape[0] - 1)
    mask, dist = _finite_sq_distances(updates, finite, name, updates[trusted])
    if not bool(mask[trusted]):
        raise ValueError(f"{name}: the trusted row {trusted} holds NaN or Inf")
    k = int(mask.sum())
    MAJORITY.check(k, f, name)
    position = int(mask[:trusted].sum())
    dist[position] = 0.0                                  # exactly: the trusted row is its own neighbour
    chosen = torch.sort(dist, stable=True).indices[:k - f]
    return SubsetResult(_mean_of_rows(updates, chosen, mask), _full_mask(mask, chosen))


def monna(updates: Tensor, f: int, trusted: int = 0, *, finite: Tensor | None = None) -> Tensor:
    """MoNNA: see :func:`monna_selection`."""
    return monna_selection(updates, f, trusted, finite=finite).aggregate
