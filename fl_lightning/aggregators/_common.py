"""Small pieces the aggregator classes share: finite rows, normalised weights, the result."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from fl_lightning.aggregators.base import AggregationResult, flag_by_weight
from fl_lightning.aggregators.functional import finite_rows


def check_updates(updates: Tensor, name: str, ctx: Any = None) -> Tensor:
    """``[K]`` bool of the finite rows of a ``[K, N]`` floating-point update matrix.

    The round loop scans the updates once per round and passes the mask as ``ctx.finite``; it is
    used as is when given (and has one entry per row), so the rows are not scanned again.
    """
    if not isinstance(updates, Tensor):
        raise TypeError(f"{name}.aggregate expects a floating-point [K, N] tensor of updates, "
                        f"got {type(updates).__name__}")
    if updates.dim() != 2 or not updates.is_floating_point():
        raise ValueError(f"{name}.aggregate expects a floating-point [K, N] tensor of updates, "
                         f"got {updates.dtype} of shape {tuple(updates.shape)}")
    finite = getattr(ctx, "finite", None)
    if finite is not None and tuple(finite.shape) == (updates.shape[0],):
        return finite.to(device=updates.device, dtype=torch.bool)
    return finite_rows(updates)


def sample_weights(ctx: Any, k: int, name: str, device: torch.device | None = None) -> Tensor:
    """The clients' sample counts from ``ctx.num_samples`` as a float64 ``[K]`` tensor on ``device``."""
    counts = getattr(ctx, "num_samples", None)
    if counts is None:
        raise ValueError(f"{name}: the round context has no num_samples; pass weighted=False")
    counts = torch.as_tensor(counts, dtype=torch.float64, device=device).flatten()
    if counts.numel() != k:
        raise ValueError(f"{name}: ctx.num_samples has {counts.numel()} entries for {k} updates")
    return counts




def client_weights(ctx: Any, finite: Tensor, weighted: bool, name: str) -> Tensor:
    """Sum-1 weights over the finite rows: by sample count when ``weighted``, else uniform."""
    k = finite.numel()
    raw = sample_weights(ctx, k, name, finite.device) if weighted \
        else torch.ones(k, dtype=torch.float64, device=finite.device)
    return normalised(raw, finite)


def normalised(raw: Tensor, finite: Tensor) -> Tensor:
    """``raw`` restricted to the finite rows and scaled to sum 1 (zeros elsewhere), float32."""
    weights = torch.where(finite, raw.to(finite.device, torch.float64),
                          torch.zeros((), dtype=torch.float64, device=finite.device))
    total = weights.sum()
    if not total > 0:
        weights = finite.to(torch.float64)
        total = weights.sum()
    return (weights / total).float()


def weighted_result(update: Tensor, weights: Tensor, fraction: float, **diagnostics: Any) -> AggregationResult:
    """An :class:`AggregationResult` whose ``flagged`` clients weigh under ``fraction`` of ``1/K``."""
    return AggregationResult(update, weights, {"flagged": flag_by_weight(weights, fraction), **diagnostics})


def unweighted_result(update: Tensor, finite: Tensor, **diagnostics: Any) -> AggregationResult:
    """An :class:`AggregationResult` without client weights; only non-finite rows are flagged."""
    return AggregationResult(update, None, {"flagged": ~finite, **diagnostics})
