"""Rules that filter clients along the directions of largest spread: CAF, SMEA and DnC."""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from fl_lightning.aggregators.functional._base import (
    _all_or_mask, _draw_device, _gram, _mean_of_rows, _require_finite, _weighted_rows,
)
from fl_lightning.aggregators.functional._rules import MAJORITY
from fl_lightning.aggregators.functional.distance import (
    SubsetResult, _full_mask, _majority_input, _subsets, check_byzantine_count,
)
from fl_lightning.checks import check_int, check_number

# All three work on the K x K Gram matrix of the finite rows: the non-zero eigenvalues of a (weighted)
# covariance D^T W D of K points equal those of W^1/2 D D^T W^1/2, so no N x N matrix is ever formed.


def _centred_gram(gram: Tensor, weights: Tensor) -> Tensor:
    """``D D^T`` for ``D = X - 1 mu^T`` with ``mu = weights^T X / sum(weights)``, from ``G = X X^T``."""
    w = weights / weights.sum()
    a = gram @ w
    return gram - a.unsqueeze(0) - a.unsqueeze(1) + (w @ a)


class CAFResult(NamedTuple):
    """The aggregate ``[N]`` and the final filter weights ``c`` ``[K]`` in ``[0, 1]`` (0 for non-finite rows)."""

    aggregate: Tensor
    client_weights: Tensor


def caf_details(updates: Tensor, f: int, *, finite: Tensor | None = None) -> CAFResult:
    """Covariance-bound agnostic filter (Allouah et al. 2024, "Towards practical Byzantine-robust
    aggregation", Algorithm CAF): weights ``c_i = 1``; while ``sum c > K - 2f``, take the weighted mean
    ``mu_c`` and the top eigenpair ``(lambda, v)`` of the weighted covariance
    ``sum_i c_i (x_i - mu_c)(x_i - mu_c)^T / sum c``, remember ``mu_c`` if ``lambda`` is the smallest so
    far, and shrink ``c_i *= 1 - tau_i / max tau`` with ``tau_i = <x_i - mu_c, v>^2``. Returns the
    remembered mean. The eigenpair is exact (ByzFL takes one power-iteration step from a random start).
    Needs ``K > 2f`` finite clients.
    """
    name = "caf"
    values, mask = _majority_input(updates, f, name, finite)
    k = values.shape[0]
    gram = _gram(updates, _all_or_mask(mask))
    c = torch.ones(k, dtype=torch.float64, device=gram.device)
    best_value, best_c = math.inf, c.clone()
    first_top = None
    while float(c.sum()) > k - 2 * f:
        root = c.sqrt()
        centred = _centred_gram(gram, c)
        eigenvalues, eigenvectors = torch.linalg.eigh(root.unsqueeze(1) * centred * root.unsqueeze(0) / c.sum())
        top, u = float(eigenvalues[-1]), eigenvectors[:, -1]
        if top < best_value:
            best_value, best_c = top, c.clone()
        first_top = top if first_top is None else first_top
        # relative to the first (unweighted) spread, so scaling every update by any factor filters the
        # same clients: an absolute floor would let updates of norm 1e-6 through unfiltered
        if top <= 1e-12 * first_top:
            break                                              # no spread left: nothing more to filter
        # <x_i - mu_c, v> for v = D^T C^1/2 u / ||.||: (D D^T C^1/2 u)_i / sqrt(sum c * lambda)
        tau = (centred @ (root * u)).square() / (float(c.sum()) * top)
        # the largest tau among the clients still weighted: a client already at c = 0 far away would
        # otherwise keep the maximum and shrink the others by ever smaller steps (ByzFL takes the max
        # over all clients and can loop for very long; the two agree whenever the max is a weighted one)
        c = c * (1 - tau / tau[c > 0].max())
        c = c.clamp_min(0)
    weights = best_c / best_c.sum()
    full = torch.zeros(mask.numel(), dtype=updates.dtype, device=updates.device)
    full[mask] = best_c.to(updates.dtype)
    return CAFResult(_weighted_rows(weights, updates, _all_or_mask(mask)), full)


def caf(updates: Tensor, f: int, *, finite: Tensor | None = None) -> Tensor:
    """CAF: see :func:`caf_details`."""
    return caf_details(updates, f, finite=finite).aggregate


def smea_selection(updates: Tensor, f: int, *, finite: Tensor | None = None) -> SubsetResult:
    """Smallest maximum eigenvalue averaging (Allouah et al. 2024, Algorithm SMEA): the mean of the
    ``K - f`` rows whose empirical covariance has the smallest largest eigenvalue.

    Every subset is examined (``C(K, f)``); ties go to the first in lexicographic order of row indices.
    Needs ``K > 2f`` finite clients.
    """
    name = "smea"
    values, mask = _majority_input(updates, f, name, finite)
    k = values.shape[0]
    gram = _gram(updates, _all_or_mask(mask))
    m = k - f
    centre = torch.eye(m, dtype=torch.float64, device=gram.device) - 1.0 / m
    best, best_subset = math.inf, None
    for subsets in _subsets(k, m, name, gram.device):
        sub = gram[subsets.unsqueeze(2), subsets.unsqueeze(1)]
        top = torch.linalg.eigvalsh(centre @ sub @ centre)[:, -1] / m        # [B]
        index = int(torch.argmin(top))
        if float(top[index]) < best:
            best, best_subset = float(top[index]), subsets[index]
    return SubsetResult(_mean_of_rows(updates, best_subset, mask), _full_mask(mask, best_subset))


def smea(updates: Tensor, f: int, *, finite: Tensor | None = None) -> Tensor:
    """SMEA: see :func:`smea_selection`."""
    return smea_selection(updates, f, finite=finite).aggregate


def dnc_selection(updates: Tensor, f: int, *, niters: int = 5, sub_dim: int = 10000, c: float = 1.0,
                  generator: torch.Generator | None = None, finite: Tensor | None = None) -> SubsetResult:
    """Divide and conquer (Shejwalkar & Houmansadr, NDSS 2021, Algorithm 2).

    ``niters`` times: draw ``sub_dim`` of the ``N`` coordinates (all when ``sub_dim >= N``), centre the
    rows on their mean, score each by its squared projection on the top right singular vector and keep
    the ``K - floor(c f)`` lowest scores. The good set is the intersection over the iterations (if it is
    empty, the rows kept most often); the aggregate is its mean. Equal scores keep the lower row index.
    """
    name = "dnc"
    check_byzantine_count(f, name)
    check_int(niters, "niters", name, minimum=1)
    check_int(sub_dim, "sub_dim (coordinates per iteration)", name, minimum=1)
    check_number(c, "c (the filtering fraction)", name, low=0.0)
    values, mask = _require_finite(updates, 1, name, finite)
    k, n = values.shape
    MAJORITY.check(k, f, name)
    remove = min(k - 1, int(math.floor(c * f * (1 + 1e-9))))
    kept_count = torch.zeros(k, dtype=torch.long, device=values.device)
    for _ in range(niters):
        columns = None
        if sub_dim < n:
            drawn = torch.randperm(n, generator=generator, device=_draw_device(generator))
            columns = drawn[:sub_dim].sort().values.to(values.device)
        sub = (values if columns is None else values[:, columns]).double()
        centred = sub - sub.mean(dim=0)
        eigenvalues, eigenvectors = torch.linalg.eigh(centred @ centred.T)
        # projection of row i on the top right singular vector v = C^T u / sqrt(lambda): sqrt(lambda) u_i
        scores = eigenvalues[-1].clamp_min(0) * eigenvectors[:, -1].square()
        kept_count[torch.sort(scores, stable=True).indices[:k - remove]] += 1
    good = kept_count == kept_count.max()
    chosen = torch.nonzero(good).flatten()
    return SubsetResult(_mean_of_rows(updates, chosen, mask), _full_mask(mask, chosen))


def dnc(updates: Tensor, f: int, *, niters: int = 5, sub_dim: int = 10000, c: float = 1.0,
        generator: torch.Generator | None = None, finite: Tensor | None = None) -> Tensor:
    """DnC: see :func:`dnc_selection`."""
    return dnc_selection(updates, f, niters=niters, sub_dim=sub_dim, c=c, generator=generator,
                         finite=finite).aggregate
