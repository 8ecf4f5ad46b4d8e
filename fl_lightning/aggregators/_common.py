"""Small pieces the aggregator classes share: finite rows, normalised weights, the result."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from fl_lightning.aggregators.base import AggregationResult, flag_by_weight
from fl_lightning.aggregators.functional import _check_choice, finite_rows

#: ``ValueError`` naming ``what`` and the valid choices (shared with the functional API's checks)
check_choice = _check_choice


def check_updates(updates: Tensor, name: str) -> Tensor:
    """``[K]`` bool of the finite rows of a ``[K, N]`` floating-point update matrix (else ``ValueError``)."""
    if not isinstance(updates, Tensor) or updates.dim() != 2 or not updates.is_floating_point():
        shape = tuple(updates.shape) if isinstance(updates, Tensor) else type(updates).__name__
        raise ValueError(f"{name}.aggregate expects a floating-point [K, N] tensor of updates, got {shape}")
    return finite_rows(updates)


def sample_weights(ctx: Any, k: int, name: str) -> Tensor:
    """The clients' sample counts from ``ctx.num_samples`` as a float64 ``[K]`` tensor."""
    counts = getattr(ctx, "num_samples", None)
    if counts is None:
        raise ValueError(f"{name}: the round context has no num_samples; pass weighted=False")
    counts = torch.as_tensor(counts, dtype=torch.float64).flatten()
    if counts.numel() != k:
        raise ValueError(f"{name}: ctx.num_samples has {counts.numel()} entries for {k} updates")
    return counts


def check_flag(value: Any, what: str, name: str) -> None:
    """``ValueError`` naming the option unless ``value`` is ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}: {what} must be True or False, got {value!r}")


def client_weights(ctx: Any, finite: Tensor, weighted: bool, name: str) -> Tensor:
    """Sum-1 weights over the finite rows: by sample count when ``weighted``, else uniform."""
    k = finite.numel()
    raw = sample_weights(ctx, k, name) if weighted else torch.ones(k, dtype=torch.float64, device=finite.device)
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


def check_number(value: Any, what: str, name: str, low: float, high: float | None = None,
                 low_inclusive: bool = False, integer: bool = False) -> None:
    """``ValueError`` naming the hyper-parameter unless ``value`` is a number in the allowed range."""
    kinds = (int,) if integer else (int, float)
    ok = not isinstance(value, bool) and isinstance(value, kinds) and value == value
    if ok:
        ok = value >= low if low_inclusive else value > low
        if ok and high is not None:
            ok = value < high
    if not ok:
        bound = f"{'>=' if low_inclusive else '>'} {low}" + (f" and < {high}" if high is not None else "")
        kind = "an int" if integer else "a number"
        raise ValueError(f"{name}: {what} must be {kind} {bound}, got {value!r}")
