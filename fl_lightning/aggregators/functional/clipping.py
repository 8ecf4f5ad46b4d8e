"""Rules that clip updates: centered clipping and norm clipping."""
from __future__ import annotations

import torch
from torch import Tensor

from fl_lightning.aggregators.functional._base import (
    _all_or_mask, _check_updates, _finite_mask, _finite_sq_distances, _finite_weights, _require_some,
    _row_sq_distances, _weighted_rows,
)
from fl_lightning.aggregators.functional.coordinate import coordinate_median
from fl_lightning.checks import check_int, check_positive


def centered_clipping(updates: Tensor, *, tau: float = 1.0, iters: int = 3,
                      center: Tensor | None = None, finite: Tensor | None = None) -> Tensor:
    """Centered clipping (Karimireddy et al. 2021): ``v += mean_k (x_k - v) min(1, tau / ||x_k - v||)``.

    Repeated ``iters`` times from ``center`` (default: the coordinate median).
    """
    name = "centered_clipping"
    check_positive(tau, "tau", name)
    check_int(iters, "iters", name, minimum=1)
    sq_dist = None
    if center is None:
        mask = _finite_mask(updates, name, finite)
        v = coordinate_median(updates, finite=mask)
    else:
        _check_updates(updates, name)
        n = updates.shape[1]
        if not isinstance(center, Tensor) or tuple(center.shape) != (n,) or not bool(torch.isfinite(center).all()):
            raise ValueError(f"{name}: center must be a finite tensor of shape ({n},)")
        v = center.to(device=updates.device, dtype=updates.dtype)
        # the first step's distances double as the scan for non-finite rows: the input is read once
        mask, sq_dist = _finite_sq_distances(updates, finite, name, v)
        _require_some(mask, name)
    k = int(mask.sum())
    rows = _all_or_mask(mask)
    for _ in range(iters):
        dist = (_row_sq_distances(updates, rows, v) if sq_dist is None else sq_dist).sqrt()
        sq_dist = None
        keep = torch.clamp(tau / dist.clamp_min(1e-300), max=1.0)
        # v + sum_k c_k (x_k - v) / K  ==  v (1 - sum c / K) + (c / K) @ x
        v = v * (1 - float(keep.sum()) / k) + _weighted_rows(keep / k, updates, rows)
    return v


def norm_clipping(updates: Tensor, max_norm: float, weights: Tensor | None = None,
                  *, finite: Tensor | None = None) -> Tensor:
    """Mean of the updates after scaling each to L2 norm at most ``max_norm`` (Sun et al. 2019)."""
    name = "norm_clipping"
    check_positive(max_norm, "max_norm", name)
    mask = _finite_mask(updates, name, finite)
    weights = _finite_weights(weights, mask, name)
    rows = _all_or_mask(mask)
    norms = _row_sq_distances(updates, rows).sqrt()
    scale = torch.clamp(max_norm / norms.clamp_min(1e-300), max=1.0)
    return _weighted_rows(weights * scale, updates, rows)

