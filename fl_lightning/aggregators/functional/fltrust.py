"""FLTrust: trust each client by the direction of its update against the server's own."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from fl_lightning.aggregators.functional._base import (
    _all_or_mask, _finite_mask, _row_sq_distances, _weighted_rows,
)


class FLTrustResult(NamedTuple):
    """The aggregate ``[N]`` and the ``[K]`` trust scores ``ReLU(cos)`` (0 for non-finite rows)."""

    aggregate: Tensor
    trust_scores: Tensor


def fltrust_details(updates: Tensor, reference: Tensor, *, finite: Tensor | None = None) -> FLTrustResult:
    """FLTrust (Cao et al., NDSS 2021, eq. 1-3) against the server's ``reference`` update ``g_0``.

    Trust score ``TS_i = ReLU(cos(g_i, g_0))`` (eq. 1); each update is rescaled to the reference's
    norm, ``g_i ||g_0|| / ||g_i||`` (eq. 2); the aggregate is ``sum_i TS_i g_i' / sum_i TS_i`` (eq. 3),
    and 0 when no client has a positive score. A zero update scores 0.
    """
    name = "fltrust"
    mask = _finite_mask(updates, name, finite)
    n = updates.shape[1]
    if not isinstance(reference, Tensor) or tuple(reference.shape) != (n,) \
            or not bool(torch.isfinite(reference).all()):
        shape = tuple(reference.shape) if isinstance(reference, Tensor) else type(reference).__name__
        raise ValueError(f"{name}: reference must be the server's finite update of shape ({n},), got {shape}")
    rows = _all_or_mask(mask)
    ref = reference.to(device=updates.device, dtype=torch.float64)
    ref_norm = float(ref.norm())
    norms = _row_sq_distances(updates, rows).sqrt()
    dots = _dots(updates, rows, ref)
    denominator = norms * ref_norm
    cosine = torch.where(denominator > 0, dots / denominator.clamp_min(1e-300), torch.zeros_like(dots))
    scores = cosine.clamp_min(0)
    full = torch.zeros(mask.numel(), dtype=updates.dtype, device=updates.device)
    full[mask] = scores.to(updates.dtype)
    total = float(scores.sum())
    if total <= 0:
        return FLTrustResult(torch.zeros(n, dtype=updates.dtype, device=updates.device), full)
    coefficients = scores * ref_norm / norms.clamp_min(1e-300) / total
    return FLTrustResult(_weighted_rows(coefficients, updates, rows), full)


def _dots(updates: Tensor, rows: Tensor | None, reference: Tensor) -> Tensor:
    """``[K_f]`` float64 inner products of the finite rows with ``reference``."""
    values = updates if rows is None else updates[rows]
    if not values.shape[1]:
        return torch.zeros(values.shape[0], dtype=torch.float64, device=values.device)
    return values.double() @ reference


def fltrust(updates: Tensor, reference: Tensor, *, finite: Tensor | None = None) -> Tensor:
    """FLTrust: see :func:`fltrust_details`."""
    return fltrust_details(updates, reference, finite=finite).aggregate
