"""The geometric median by smoothed Weiszfeld iterations (RFA)."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from fl_lightning.aggregators.functional._base import (
    _all_or_mask, _finite_mask, _finite_weights, _row_sq_distances, _weighted_rows,
)
from fl_lightning.aggregators.functional.coordinate import coordinate_median
from fl_lightning.checks import check_int, check_positive


class WeiszfeldResult(NamedTuple):
    """The geometric median, the ``[K]`` weights of its last Weiszfeld step (sum 1) and the steps taken."""

    median: Tensor
    client_weights: Tensor
    iterations: int


def geometric_median(updates: Tensor, weights: Tensor | None = None, *, tol: float = 1e-6,
                     max_iter: int = 100, eps: float = 1e-6, finite: Tensor | None = None) -> Tensor:
    """Geometric median by smoothed Weiszfeld iterations (Pillutla et al. 2019, RFA).

    Starts at the coordinate median; each step re-weights clients by ``alpha_k / max(eps, ||x_k - z||)``
    and stops when a step moves less than ``tol`` times the median client distance (RFA stops on the
    objective, which far-away attackers dominate), or after ``max_iter`` steps.
    """
    return weiszfeld(updates, weights, tol=tol, max_iter=max_iter, eps=eps, finite=finite).median


def weiszfeld(updates: Tensor, weights: Tensor | None = None, *, tol: float = 1e-6,
              max_iter: int = 100, eps: float = 1e-6, finite: Tensor | None = None) -> WeiszfeldResult:
    """:func:`geometric_median` with the client weights of its last step and the number of steps."""
    name = "geometric_median"
    check_positive(tol, "tol", name)
    check_positive(eps, "eps", name)
    check_int(max_iter, "max_iter", name, minimum=1)
    mask = _finite_mask(updates, name, finite)
    alpha = _finite_weights(weights, mask, name)
    rows = _all_or_mask(mask)
    z = coordinate_median(updates, finite=mask)
    beta, steps = alpha, 0
    for _ in range(max_iter):
        dist = _row_sq_distances(updates, rows, z).sqrt()
        beta = alpha / dist.clamp_min(eps)
        beta = beta / beta.sum()
        new = _weighted_rows(beta, updates, rows)
        steps += 1
        moved = float(_row_sq_distances(new.unsqueeze(0), None, z)) ** 0.5
        z = new
        if moved <= tol * max(float(dist.median()), eps):
            break
    full = torch.zeros(updates.shape[0], dtype=updates.dtype, device=updates.device)
    full[mask] = beta.to(updates.dtype)
    return WeiszfeldResult(z, full, steps)

